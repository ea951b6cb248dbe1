"""Pixel-to-sky conversions of positions, their errors, lengths and position angles."""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS
from numpy.typing import NDArray

__all__ = ["local_jacobian", "pixel_to_sky", "position_angle_deg", "sky_covariance"]


def pixel_to_sky(
    wcs: WCS, x: NDArray[np.float64], y: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ICRS (ra, dec) in degrees of 0-based pixel positions (NaN stays NaN)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    ra, dec = wcs.all_pix2world(x, y, 0)
    return np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)


def local_jacobian(wcs: WCS, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """d(east, north)/d(x, y) in degrees per pixel at each position, shape (n, 2, 2).

    East is the tangent-plane offset ``dRA * cos(dec)``; the derivatives are central
    differences over one pixel, which is exact for TAN and accurate to 1e-9 for SIP.
    """
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    y = np.nan_to_num(np.asarray(y, dtype=np.float64))
    n = x.size
    h = 0.5
    px = np.concatenate([x + h, x - h, x, x])
    py = np.concatenate([y, y, y + h, y - h])
    ra, dec = pixel_to_sky(wcs, px, py)
    ra, dec = ra.reshape(4, n), dec.reshape(4, n)
    cosd = np.cos(np.deg2rad(dec.mean(axis=0)))
    dra = lambda a, b: ((ra[a] - ra[b] + 180.0) % 360.0 - 180.0) * cosd  # noqa: E731
    jac = np.empty((n, 2, 2))
    jac[:, 0, 0] = dra(0, 1) / (2 * h)
    jac[:, 1, 0] = (dec[0] - dec[1]) / (2 * h)
    jac[:, 0, 1] = dra(2, 3) / (2 * h)
    jac[:, 1, 1] = (dec[2] - dec[3]) / (2 * h)
    return jac


def sky_covariance(
    jac: NDArray[np.float64],
    x_err: NDArray[np.float64],
    y_err: NDArray[np.float64],
    xy_cov: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(raErr, decErr, ra_dec_Cov) in degrees (raErr is along RA*cos(dec)) from pixel errors."""
    cov = np.zeros((len(x_err), 2, 2))
    cov[:, 0, 0] = np.asarray(x_err) ** 2
    cov[:, 1, 1] = np.asarray(y_err) ** 2
    cov[:, 0, 1] = cov[:, 1, 0] = np.nan_to_num(np.asarray(xy_cov, dtype=np.float64))
    sky = jac @ cov @ np.transpose(jac, (0, 2, 1))
    return np.sqrt(sky[:, 0, 0]), np.sqrt(sky[:, 1, 1]), sky[:, 0, 1]


def position_angle_deg(
    jac: NDArray[np.float64], dx: NDArray[np.float64], dy: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Bearing (east of north, degrees in [0, 360)) of the pixel direction (dx, dy)."""
    east = jac[:, 0, 0] * dx + jac[:, 0, 1] * dy
    north = jac[:, 1, 0] * dx + jac[:, 1, 1] * dy
    return np.rad2deg(np.arctan2(east, north)) % 360.0
