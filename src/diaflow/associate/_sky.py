"""Sky geometry for association: unit vectors, tangent-plane offsets, neighbour pairs, chi-square.

Offsets are gnomonic (east, north) about a reference point, in arcseconds, so they are exact at
the poles and across RA = 0; errors and covariances are on the sky (RA errors include cos dec),
as APDB stores them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

ARCSEC_PER_RAD = 180.0 / np.pi * 3600.0
ARCSEC_PER_DEG = 3600.0

F8 = NDArray[np.float64]
I8 = NDArray[np.int64]


def unit_vectors(ra_deg: ArrayLike, dec_deg: ArrayLike) -> F8:
    """Cartesian unit vectors (n, 3) of ICRS positions in degrees."""
    ra = np.deg2rad(np.asarray(ra_deg, np.float64))
    dec = np.deg2rad(np.asarray(dec_deg, np.float64))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def _basis(ra0_deg: ArrayLike, dec0_deg: ArrayLike) -> tuple[F8, F8, F8]:
    ra0 = np.deg2rad(np.asarray(ra0_deg, np.float64))
    dec0 = np.deg2rad(np.asarray(dec0_deg, np.float64))
    sa, ca, sd, cd = np.sin(ra0), np.cos(ra0), np.sin(dec0), np.cos(dec0)
    centre = np.stack([cd * ca, cd * sa, sd], axis=-1)
    east = np.stack([-sa, ca, np.zeros_like(sa)], axis=-1)
    north = np.stack([-sd * ca, -sd * sa, cd], axis=-1)
    return centre, east, north


def tangent_offsets(
    ra_deg: ArrayLike, dec_deg: ArrayLike, ra0_deg: ArrayLike, dec0_deg: ArrayLike
) -> tuple[F8, F8]:
    """Gnomonic offsets (east, north) in arcsec of positions from reference points (broadcast)."""
    p = unit_vectors(ra_deg, dec_deg)
    centre, east, north = _basis(ra0_deg, dec0_deg)
    cos_c = np.sum(p * centre, axis=-1)
    dx = np.sum(p * east, axis=-1) / cos_c * ARCSEC_PER_RAD
    dy = np.sum(p * north, axis=-1) / cos_c * ARCSEC_PER_RAD
    return dx, dy


def from_tangent(
    dx_arcsec: ArrayLike, dy_arcsec: ArrayLike, ra0_deg: ArrayLike, dec0_deg: ArrayLike
) -> tuple[F8, F8]:
    """Inverse of :func:`tangent_offsets`: ICRS degrees of gnomonic offsets in arcsec."""
    centre, east, north = _basis(ra0_deg, dec0_deg)
    x = np.asarray(dx_arcsec, np.float64)[..., None] / ARCSEC_PER_RAD
    y = np.asarray(dy_arcsec, np.float64)[..., None] / ARCSEC_PER_RAD
    p = centre + x * east + y * north
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    ra = np.rad2deg(np.arctan2(p[..., 1], p[..., 0])) % 360.0
    # arctan2, not arcsin: arcsin loses precision near the poles.
    dec = np.rad2deg(np.arctan2(p[..., 2], np.hypot(p[..., 0], p[..., 1])))
    return ra, dec


def pairs_within(
    ra1: ArrayLike, dec1: ArrayLike, ra2: ArrayLike, dec2: ArrayLike, radius_arcsec: float
) -> tuple[I8, I8]:
    """All (i, j) with position i of the first set within ``radius_arcsec`` of j of the second.

    A KD-tree on unit vectors with the chord length of the radius: no RA wrap or pole special
    cases. Pairs come sorted by (i, j).
    """
    v1, v2 = unit_vectors(ra1, dec1).reshape(-1, 3), unit_vectors(ra2, dec2).reshape(-1, 3)
    if len(v1) == 0 or len(v2) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    chord = 2.0 * np.sin(np.deg2rad(radius_arcsec / ARCSEC_PER_DEG) / 2.0)
    found = cKDTree(v1).sparse_distance_matrix(cKDTree(v2), chord, output_type="ndarray")
    order = np.lexsort((found["j"], found["i"]))
    return found["i"][order].astype(np.int64), found["j"][order].astype(np.int64)


def covariance_arcsec2(
    ra_err_deg: ArrayLike,
    dec_err_deg: ArrayLike,
    cov_deg2: ArrayLike | None,
    *,
    missing_error_arcsec: float,
) -> tuple[F8, F8, F8]:
    """Per-row covariance (xx, yy, xy) in arcsec² from APDB raErr, decErr, ra_dec_Cov.

    Non-finite or non-positive errors become ``missing_error_arcsec``; a missing covariance is 0;
    the correlation is kept within ±0.99 so every matrix is invertible.
    """
    sx = np.asarray(ra_err_deg, np.float64) * ARCSEC_PER_DEG
    sy = np.asarray(dec_err_deg, np.float64) * ARCSEC_PER_DEG
    sx = np.where(np.isfinite(sx) & (sx > 0), sx, missing_error_arcsec)
    sy = np.where(np.isfinite(sy) & (sy > 0), sy, missing_error_arcsec)
    if cov_deg2 is None:
        cxy = np.zeros_like(sx)
    else:
        cxy = np.asarray(cov_deg2, np.float64) * ARCSEC_PER_DEG**2
        cxy = np.where(np.isfinite(cxy), cxy, 0.0)
        limit = 0.99 * sx * sy
        cxy = np.clip(cxy, -limit, limit)
    return sx * sx, sy * sy, cxy


def chi2(dx: F8, dy: F8, sxx: F8, syy: F8, sxy: F8) -> F8:
    """Chi-square of offsets (dx, dy) under covariances [[sxx, sxy], [sxy, syy]]."""
    det = sxx * syy - sxy * sxy
    return (syy * dx * dx - 2.0 * sxy * dx * dy + sxx * dy * dy) / det
