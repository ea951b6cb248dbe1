"""Astrometric calibration: match detected stars to the reference catalog and fit the WCS.

The header WCS is the commanded pointing: its distortion (SIP) is right but the tangent point and
the rotation are off by a few arcseconds. The fit therefore keeps the distortion and corrects the
linear part. Reference stars are first moved to the visit's epoch with their proper motions. The
offset between catalog and image is found by voting: every pair (detection, reference star)
votes for its offset in a 2-D histogram, and the true offset collects one vote per matched star
while wrong pairs spread out. Then, a few times over, stars are matched within a shrinking radius,
the tangent-plane coordinates of the reference stars are fitted as a similarity (shift, rotation,
scale) or affine function of the header WCS's tangent-plane coordinates of the detections, and
matches beyond ``clip_sigma`` robust sigmas are rejected. A linear correction ``A p + t`` of the
intermediate coordinates ``p = CD q`` (``q`` the SIP-corrected pixel offsets) is exactly a new
``CD' = A CD`` and a new tangent point, so the corrected WCS is again a TAN-SIP header.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from astropy.wcs import WCS
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from ..errors import CalibrationError
from .config import AstrometryConfig

__all__ = ["AstrometryFit", "fit_wcs", "refcat_at_epoch"]

_MJD_PER_YEAR = 365.25


@dataclass(frozen=True)
class AstrometryFit:
    """A fitted WCS and how well it fits."""

    wcs: WCS
    """The corrected WCS (same distortion as the input, new tangent point and CD matrix)."""
    det_index: NDArray[np.intp]
    """Indices of the matched detections (in the input order)."""
    ref_index: NDArray[np.intp]
    """Indices of their reference stars (rows of the reference table passed in)."""
    residual_ra_mas: NDArray[np.float64]
    """Fit residuals of the matches, reference minus WCS, along RA (times cos Dec), mas."""
    residual_dec_mas: NDArray[np.float64]
    """Fit residuals along Dec, mas."""
    rms_mas: float
    """Per-axis RMS of the residuals, mas."""
    offset_arcsec: float
    """How far the tangent point moved from the header's."""
    rotation_arcsec: float
    """Rotation of the fitted CD matrix relative to the header's (counter-clockwise)."""
    scale_ppm: float
    """Change of the pixel scale relative to the header's, parts per million."""


def refcat_at_epoch(refcat: pd.DataFrame, mjd_tai: float) -> tuple[NDArray, NDArray]:
    """Reference positions moved by their proper motions to ``mjd_tai``.

    Parameters
    ----------
    refcat
        Columns ``ra``, ``dec`` (deg at ``epoch``, MJD), ``pm_ra`` (mas/yr, includes cos Dec),
        ``pm_dec`` (mas/yr); missing or NaN motions count as zero.
    mjd_tai
        Target epoch (the TAI-TDB difference is irrelevant at this precision).

    Returns
    -------
    ra, dec : numpy.ndarray
        Degrees.
    """
    ra = refcat["ra"].to_numpy(dtype=np.float64)
    dec = refcat["dec"].to_numpy(dtype=np.float64)
    if "epoch" not in refcat or "pm_ra" not in refcat or "pm_dec" not in refcat:
        return ra, dec
    years = (mjd_tai - refcat["epoch"].to_numpy(dtype=np.float64)) / _MJD_PER_YEAR
    pm_ra = np.nan_to_num(refcat["pm_ra"].to_numpy(dtype=np.float64))
    pm_dec = np.nan_to_num(refcat["pm_dec"].to_numpy(dtype=np.float64))
    cosd = np.cos(np.deg2rad(dec))
    return ra + pm_ra * years / 3.6e6 / np.maximum(cosd, 1e-9), dec + pm_dec * years / 3.6e6


def _project(ra: NDArray, dec: NDArray, ra0: float, dec0: float) -> tuple[NDArray, NDArray]:
    """Gnomonic projection about (ra0, dec0): standard coordinates (xi east, eta north), deg."""
    a, d = np.deg2rad(ra), np.deg2rad(dec)
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cosc = np.sin(d) * math.sin(d0) + np.cos(d) * math.cos(d0) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (np.sin(d) * math.cos(d0) - np.cos(d) * math.sin(d0) * np.cos(a - a0)) / cosc
    return np.rad2deg(xi), np.rad2deg(eta)


def _deproject(xi: float, eta: float, ra0: float, dec0: float) -> tuple[float, float]:
    """Inverse of :func:`_project` for one point."""
    x, y = math.radians(xi), math.radians(eta)
    d0 = math.radians(dec0)
    rho = math.hypot(x, y)
    if rho == 0:
        return ra0, dec0
    c = math.atan(rho)
    dec = math.asin(math.cos(c) * math.sin(d0) + y * math.sin(c) * math.cos(d0) / rho)
    ra = ra0 + math.degrees(
        math.atan2(
            x * math.sin(c), rho * math.cos(d0) * math.cos(c) - y * math.sin(d0) * math.sin(c)
        )
    )
    return ra % 360.0, math.degrees(dec)


def _cd(wcs: WCS) -> NDArray[np.float64]:
    return np.asarray(wcs.pixel_scale_matrix, dtype=np.float64)


def _with_linear(wcs: WCS, crval: tuple[float, float], cd: NDArray[np.float64]) -> WCS:
    out = copy.deepcopy(wcs)
    out.wcs.crval = list(crval)
    if out.wcs.has_cd():
        out.wcs.cd = cd
    else:
        cdelt = np.asarray(out.wcs.cdelt, dtype=np.float64)
        out.wcs.pc = cd / cdelt[:, None]
    out.wcs.set()
    return out


def _vote_offset(
    xd: NDArray, yd: NDArray, xr: NDArray, yr: NDArray, max_px: float, bin_px: float
) -> tuple[float, float, int]:
    """Most-voted (dx, dy) = detection - reference within +-max_px, and its number of votes."""
    dx = (xd[:, None] - xr[None, :]).ravel()
    dy = (yd[:, None] - yr[None, :]).ravel()
    near = (np.abs(dx) < max_px) & (np.abs(dy) < max_px)
    dx, dy = dx[near], dy[near]
    if dx.size == 0:
        return 0.0, 0.0, 0
    n = math.ceil(2 * max_px / bin_px)
    hist, xe, ye = np.histogram2d(dx, dy, bins=n, range=[[-max_px, max_px], [-max_px, max_px]])
    # Sum 2x2 neighbouring bins so an offset on a bin edge still collects all its votes.
    summed = hist[:-1, :-1] + hist[1:, :-1] + hist[:-1, 1:] + hist[1:, 1:]
    i, j = np.unravel_index(np.argmax(summed), summed.shape)
    cx, cy = xe[i + 1], ye[j + 1]
    sel = (np.abs(dx - cx) <= bin_px) & (np.abs(dy - cy) <= bin_px)
    return float(np.median(dx[sel])), float(np.median(dy[sel])), int(summed[i, j])


def _fit_linear(
    p: NDArray, s: NDArray, w: NDArray, kind: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Weighted fit of s = A p + t; returns (A, t). p, s: (n, 2) in degrees; w: (n,)."""
    n = p.shape[0]
    sw = np.sqrt(w)
    if kind == "similarity":
        # xi = a p1 - b p2 + c ; eta = b p1 + a p2 + d
        m = np.zeros((2 * n, 4))
        m[:n] = np.column_stack([p[:, 0], -p[:, 1], np.ones(n), np.zeros(n)])
        m[n:] = np.column_stack([p[:, 1], p[:, 0], np.zeros(n), np.ones(n)])
        rhs = np.concatenate([s[:, 0], s[:, 1]])
        ww = np.concatenate([sw, sw])
        sol, *_ = np.linalg.lstsq(m * ww[:, None], rhs * ww, rcond=None)
        a, b, c, d = sol
        return np.array([[a, -b], [b, a]]), np.array([c, d])
    m = np.column_stack([p[:, 0], p[:, 1], np.ones(n)])
    sol_x, *_ = np.linalg.lstsq(m * sw[:, None], s[:, 0] * sw, rcond=None)
    sol_y, *_ = np.linalg.lstsq(m * sw[:, None], s[:, 1] * sw, rcond=None)
    return np.array([sol_x[:2], sol_y[:2]]), np.array([sol_x[2], sol_y[2]])


def fit_wcs(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    wcs: WCS,
    ref_ra: NDArray[np.float64],
    ref_dec: NDArray[np.float64],
    *,
    pos_err_px: NDArray[np.float64] | None = None,
    ref_err_mas: NDArray[np.float64] | None = None,
    config: AstrometryConfig | None = None,
) -> AstrometryFit:
    """Match detections to reference stars and fit the WCS's tangent point and CD matrix.

    Parameters
    ----------
    x, y
        Centroids of detected (preferably point-like, unsaturated) sources, 0-based pixels,
        brightest first (the brightest few hundred are used).
    wcs
        The header WCS: right distortion, approximate pointing.
    ref_ra, ref_dec
        Reference positions at the visit's epoch, degrees, brightest first.
    pos_err_px
        Centroid errors, pixels (default 0.02).
    ref_err_mas
        Reference position errors, mas (default 0).
    config
        Search radius, matching radius, model and rejection.

    Returns
    -------
    AstrometryFit

    Raises
    ------
    CalibrationError
        ``too_few_matches`` when fewer than ``config.min_matches`` stars match;
        ``astrometry_failed`` when the residual scatter exceeds ``config.max_rms_mas``.
    """
    config = config or AstrometryConfig()
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ref_ra, ref_dec = np.asarray(ref_ra, np.float64), np.asarray(ref_dec, np.float64)
    pos_err = np.full(x.size, 0.02) if pos_err_px is None else np.asarray(pos_err_px, np.float64)
    ref_err = np.zeros(ref_ra.size) if ref_err_mas is None else np.asarray(ref_err_mas, np.float64)
    scale_arcsec = math.sqrt(abs(np.linalg.det(_cd(wcs)))) * 3600.0
    max_px = config.max_offset_arcsec / scale_arcsec
    xd, yd = x[:300], y[:300]
    xr, yr = wcs.all_world2pix(ref_ra, ref_dec, 0)
    ref_use = np.flatnonzero(np.isfinite(xr) & np.isfinite(yr))[:300]
    dx, dy, votes = _vote_offset(xd, yd, xr[ref_use], yr[ref_use], max_px, 2.0)
    if votes < min(config.min_matches, 3):
        raise CalibrationError(
            "too_few_matches",
            f"astrometry: no consistent offset between {xd.size} detections and "
            f"{ref_use.size} reference stars within {config.max_offset_arcsec} arcsec "
            f"(best offset has {votes} votes); is the header WCS far off?",
            n_detections=int(xd.size),
            n_reference=int(ref_use.size),
            votes=votes,
        )
    header_crval = (float(wcs.wcs.crval[0]), float(wcs.wcs.crval[1]))
    header_cd = _cd(wcs)
    current = wcs
    radius_px = 3.0 + 2.0  # the voting bin, then shrink
    best: tuple[WCS, NDArray[np.intp], NDArray[np.intp]] | None = None
    n_match = 0
    shift = np.array([dx, dy])
    for it in range(6):
        xr, yr = current.all_world2pix(ref_ra, ref_dec, 0)
        pred = np.column_stack([xr, yr]) + (shift if it == 0 else 0.0)
        finite = np.flatnonzero(np.isfinite(pred).all(axis=1))
        tree = cKDTree(pred[finite])
        dist, j = tree.query(np.column_stack([x, y]), distance_upper_bound=radius_px)
        has = np.isfinite(dist)
        di = np.flatnonzero(has)
        ri = finite[j[has]]
        # One detection per reference star: keep the closest.
        order = np.argsort(dist[has])
        _, first = np.unique(ri[order], return_index=True)
        sel = order[first]
        di, ri = di[sel], ri[sel]
        if di.size < config.min_matches:
            break
        crval = (float(current.wcs.crval[0]), float(current.wcs.crval[1]))
        ra_d, dec_d = current.all_pix2world(x[di], y[di], 0)
        p = np.column_stack(_project(ra_d, dec_d, *crval))
        s = np.column_stack(_project(ref_ra[ri], ref_dec[ri], *crval))
        sig_deg = np.hypot(pos_err[di] * scale_arcsec * 1000, ref_err[ri]) / 3.6e6
        w = 1.0 / np.maximum(sig_deg, 1e-12) ** 2
        keep = np.ones(di.size, bool)
        for _ in range(5):
            if keep.sum() < config.min_matches:
                break
            a_mat, t = _fit_linear(p[keep], s[keep], w[keep], config.fit)
            res = s - (p @ a_mat.T + t)
            rad = np.hypot(res[:, 0], res[:, 1])
            sigma = max(1.4826 * float(np.median(rad[keep])) / 1.1774, 1e-9)  # 2-D -> per axis
            new_keep = rad < config.clip_sigma * sigma * 1.1774 + 3 * sig_deg
            if (new_keep == keep).all():
                break
            keep = new_keep
        n_match = int(keep.sum())
        if n_match < config.min_matches:
            break
        new_crval = _deproject(float(t[0]), float(t[1]), *crval)
        current = _with_linear(current, new_crval, a_mat @ _cd(current))
        best = (current, di[keep], ri[keep])
        radius_px = max(
            config.match_radius_arcsec / scale_arcsec,
            3 * float(np.median(rad)) * 3600 / scale_arcsec,
        )
    if best is None:
        raise CalibrationError(
            "too_few_matches",
            f"astrometry: {n_match} detections match reference stars; need at least "
            f"{config.min_matches}",
            n_matches=n_match,
        )
    # The last fit that had enough matches (a later, tighter round may have had too few).
    current, di, ri = best
    n_match = int(di.size)
    ra_f, dec_f = current.all_pix2world(x[di], y[di], 0)
    cosd = np.cos(np.deg2rad(ref_dec[ri]))
    res_ra = ((ref_ra[ri] - ra_f + 180) % 360 - 180) * cosd * 3.6e6
    res_dec = (ref_dec[ri] - dec_f) * 3.6e6
    rms = float(np.sqrt(np.mean(res_ra**2 + res_dec**2) / 2))
    if rms > config.max_rms_mas:
        raise CalibrationError(
            "astrometry_failed",
            f"astrometry: residual scatter {rms:.0f} mas over {n_match} matches exceeds "
            f"{config.max_rms_mas} mas (wrong matches or a distorted image?)",
            rms_mas=rms,
            n_matches=n_match,
        )
    cd_new = _cd(current)
    rel = cd_new @ np.linalg.inv(header_cd)
    xi0, eta0 = _project(
        np.array([current.wcs.crval[0]]), np.array([current.wcs.crval[1]]), *header_crval
    )
    return AstrometryFit(
        wcs=current,
        det_index=di,
        ref_index=ri,
        residual_ra_mas=res_ra,
        residual_dec_mas=res_dec,
        rms_mas=rms,
        offset_arcsec=float(np.hypot(xi0[0], eta0[0]) * 3600),
        rotation_arcsec=float(
            math.degrees(math.atan2(rel[1, 0] - rel[0, 1], rel[0, 0] + rel[1, 1])) * 3600
        ),
        scale_ppm=float((math.sqrt(abs(np.linalg.det(rel))) - 1) * 1e6),
    )
