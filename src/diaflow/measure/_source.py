"""Measurement of one detection on a difference image, in pixels and counts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..image import Exposure, mask_bits
from ._models import fit_dipole, fit_trail
from ._psffit import fit_psf
from ._shape import adaptive_moments, aperture_flux
from ._stamps import cutout, psf_moments
from .config import MeasureConfig
from .detect import Detections

__all__ = ["EXTRA_COLUMNS", "forced_flux", "measure_one"]

EXTRA_COLUMNS = (
    "xy_cov",
    "dipole_sep_px",
    "dipole_angle",
    "trail_x",
    "trail_y",
    "trail_x_err",
    "trail_y_err",
    "trail_length_px",
    "trail_angle",
)
"""Per-source pixel-frame results that the caller turns into sky columns."""

_CENTER_FLAGS = {
    "cr": "CR",
    "interpolated": "INTRP",
    "nodata": "NO_DATA",
    "saturated": "SAT",
    "suspect": "SUSPECT",
    "streak": "STREAK",
}


def forced_flux(
    exp: Exposure, psf_exp: Exposure, x: float, y: float, radius: float, bits: int
) -> tuple[float, float, bool, bool]:
    """Forced PSF flux (nJy) and error at (x, y) on ``exp``; (flux, err, edge, no_good)."""
    kernel = np.asarray(psf_exp.psf.kernel(x, y), dtype=np.float64)  # type: ignore[union-attr]
    fit = fit_psf(
        exp.image, exp.variance, exp.mask, kernel, x, y, radius_px=radius, ignore_bits=bits,
        fit_position=False,
    )  # fmt: skip
    scale = float(exp.counts_to_njy(1.0))
    return fit.flux * scale, fit.flux_err * scale, fit.edge, fit.no_good_pixels


def _flags(
    cols: dict[str, np.ndarray],
    i: int,
    mask: NDArray[np.int32],
    foot: NDArray[np.bool_],
    box: tuple[int, int, int, int],
    x: float,
    y: float,
) -> None:
    """Pixel flags of source ``i`` from its footprint (``foot`` over ``box``) and 3x3 centre."""
    ny, nx = mask.shape
    x0, y0, x1, y1 = box
    in_foot = np.bitwise_or.reduce(mask[y0 : y1 + 1, x0 : x1 + 1][foot]) if foot.any() else 0
    ix, iy = round(x), round(y)
    off = not (-0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5)
    centre = mask[max(iy - 1, 0) : iy + 2, max(ix - 1, 0) : ix + 2]
    in_centre = np.bitwise_or.reduce(centre.ravel()) if centre.size else 0
    cols["pixelFlags_offimage"][i] = off
    cols["pixelFlags_bad"][i] = bool(in_foot & mask_bits("BAD"))
    cols["pixelFlags_edge"][i] = bool(in_foot & mask_bits("EDGE")) or off
    for name, plane in _CENTER_FLAGS.items():
        bit = mask_bits(plane)
        cols[f"pixelFlags_{name}"][i] = bool(in_foot & bit)
        if f"pixelFlags_{name}Center" in cols:
            cols[f"pixelFlags_{name}Center"][i] = bool(in_centre & bit)


def measure_one(
    i: int,
    det: pd.Series,
    diff: Exposure,
    det_all: Detections,
    cfg: MeasureConfig,
    cols: dict[str, np.ndarray],
    extra: dict[str, np.ndarray],
    psf_cache: dict[tuple[int, int], NDArray[np.float64]],
    science: Exposure | None = None,
    template: Exposure | None = None,
) -> None:
    """Fill row ``i`` of ``cols`` (counts and pixels; converted to nJy and sky later).

    ``psf_cache`` keeps the PSF's moments per 256-pixel cell between calls; ``science`` and
    ``template`` (on the same grid) constrain the dipole fit's lobe fluxes.
    """
    bits = mask_bits(*cfg.fit_ignore_planes)
    img, var, msk = diff.image, diff.variance, diff.mask
    ny, nx = diff.shape
    psf = diff.psf
    px, py = int(det.x), int(det.y)
    kernel = np.asarray(psf.kernel(px, py), dtype=np.float64)  # type: ignore[union-attr]
    kernel /= kernel.sum()
    fwhm = det_all.psf_fwhm_px
    radius = max(cfg.psf_fit_radius_fwhm * fwhm, 3.0)

    # Sub-pixel start from the significance peak (a parabola through 3 pixels per axis).
    sig = det_all.significance
    x0 = px + _vertex(sig, px, py, 1)
    y0 = py + _vertex(sig, px, py, 0)
    fit = fit_psf(
        img, var, msk, kernel, x0, y0, radius_px=radius, ignore_bits=bits,
        max_shift_px=cfg.centroid_max_shift_px, max_iterations=cfg.centroid_max_iterations,
    )  # fmt: skip
    x, y = fit.x, fit.y
    cols["centroid_flag"][i] = not fit.centroid_ok
    cols["xErr"][i], cols["yErr"][i], extra["xy_cov"][i] = fit.x_err, fit.y_err, fit.xy_cov
    cols["psfFlux"][i], cols["psfFluxErr"][i] = fit.flux, fit.flux_err
    cols["psfChi2"][i], cols["psfLnL"][i], cols["psfNdata"][i] = fit.chi2, fit.lnl, fit.ndata
    cols["psfFlux_flag"][i] = fit.no_good_pixels or not np.isfinite(fit.flux)
    cols["psfFlux_flag_edge"][i] = fit.edge
    cols["psfFlux_flag_noGoodPixels"][i] = fit.no_good_pixels

    # Aperture flux.
    h = math.ceil(cfg.aperture_radius_px) + 1
    ix, iy = round(x), round(y)
    cut = cutout(img, var, msk, ix - h, iy - h, 2 * h + 1, 2 * h + 1, bits)
    ap = aperture_flux(cut, x - cut.x0, y - cut.y0, cfg.aperture_radius_px)
    cols["apFlux"][i], cols["apFluxErr"][i] = ap[0], ap[1]
    cols["apFlux_flag"][i], cols["apFlux_flag_apertureTruncated"][i] = ap[2], ap[3]

    # Second moments on a cut-out holding the footprint.
    bx0, by0, bx1, by1 = int(det.bbox_x0), int(det.bbox_y0), int(det.bbox_x1), int(det.bbox_y1)
    half = max(abs(bx0 - ix), abs(bx1 - ix), abs(by0 - iy), abs(by1 - iy)) + int(2 * fwhm)
    half = min(max(half, int(3 * fwhm)), cfg.trail_max_stamp_px // 2)
    cut = cutout(img, var, msk, ix - half, iy - half, 2 * half + 1, 2 * half + 1, bits)
    sign = -1.0 if det.is_negative else 1.0
    cell = (px // 256, py // 256)
    if cell not in psf_cache:
        psf_cache[cell] = psf_moments(kernel)
    mp = psf_cache[cell]
    cols["ixxPSF"][i], cols["iyyPSF"][i], cols["ixyPSF"][i] = mp
    mom = adaptive_moments(
        sign * cut.data, cut.weight, x - cut.x0, y - cut.y0, start=0.5 * float(mp[0] + mp[1])
    )
    cols["shape_flag_no_pixels"][i] = not (cut.weight > 0).any()
    cols["shape_flag"][i] = not mom[5]
    cols["ixx"][i], cols["iyy"][i], cols["ixy"][i] = mom[:3]

    # Dipole model for +/- pairs.
    is_dipole = False
    if np.isfinite(det.partner_x):
        cols["dipoleFitAttempted"][i] = True
        pos = (float(det.x), float(det.y))
        neg = (float(det.partner_x), float(det.partner_y))
        if det.is_negative:
            pos, neg = neg, pos
        sep = math.hypot(pos[0] - neg[0], pos[1] - neg[1])
        hd = math.ceil(0.5 * sep + 2 * fwhm)
        mx, my = round(0.5 * (pos[0] + neg[0])), round(0.5 * (pos[1] + neg[1]))
        dcut = cutout(img, var, msk, mx - hd, my - hd, 2 * hd + 1, 2 * hd + 1, bits)
        side = 2 * hd + 1
        others = {}
        for name, exp in (("science", science), ("template", template)):
            if exp is not None:
                k = kernel if exp.psf is None else np.asarray(exp.psf.kernel(px, py), float)
                c = cutout(exp.image, exp.variance, exp.mask, mx - hd, my - hd, side, side, bits)
                others[name] = (c, k / k.sum())
        dip = fit_dipole(dcut, kernel, pos, neg, **others)  # type: ignore[arg-type]
        if dip.ok:
            cols["dipoleMeanFlux"][i] = 0.5 * (dip.flux_pos + dip.flux_neg)
            cols["dipoleFluxDiff"][i] = dip.flux_pos - dip.flux_neg
            cols["dipoleMeanFluxErr"][i] = dip.mean_flux_err
            cols["dipoleFluxDiffErr"][i] = dip.flux_diff_err
            cols["dipoleChi2"][i], cols["dipoleNdata"][i] = dip.chi2, dip.ndata
            extra["dipole_sep_px"][i], extra["dipole_angle"][i] = dip.separation, dip.angle
            lo, hi = sorted((dip.flux_pos, dip.flux_neg))
            is_dipole = bool(
                lo > 0
                and lo >= cfg.dipole_min_flux_ratio * hi
                and dip.chi2_single - dip.chi2 >= cfg.dipole_min_delta_chi2
            )
            if is_dipole and 0 <= dip.x < nx and 0 <= dip.y < ny:
                x, y = dip.x, dip.y
                cols["xErr"][i], cols["yErr"][i] = dip.x_err, dip.y_err
                extra["xy_cov"][i] = dip.xy_cov
                cols["centroid_flag"][i] = False
                net = fit_psf(
                    img, var, msk, kernel, x, y, radius_px=radius, ignore_bits=bits,
                    fit_position=False,
                )  # fmt: skip
                cols["psfFlux"][i], cols["psfFluxErr"][i] = net.flux, net.flux_err
                cols["psfChi2"][i], cols["psfLnL"][i] = net.chi2, net.lnl
                cols["psfNdata"][i] = net.ndata
    cols["isDipole"][i] = is_dipole

    # Trailed-source model for elongated sources.
    if mom[5] and not is_dipole:
        mxx, myy, mxy = mom[:3]
        lam = 0.5 * (mxx + myy) + math.sqrt(0.25 * (mxx - myy) ** 2 + mxy**2)
        lam_psf = 0.5 * (mp[0] + mp[1]) + math.sqrt(0.25 * (mp[0] - mp[1]) ** 2 + mp[2] ** 2)
        length0 = math.sqrt(12.0 * max(lam - lam_psf, 0.0))
        elongation = abs(float(det.significance)) * (lam - lam_psf) / lam_psf
        if length0 >= cfg.trail_min_length_px and elongation >= cfg.trail_min_elongation:
            tr = fit_trail(
                cut, kernel, (mom[3] + cut.x0, mom[4] + cut.y0), length0,
                0.5 * math.atan2(2 * mxy, mxx - myy),
            )  # fmt: skip
            cols["trail_flag"][i] = not tr.ok
            if tr.ok:
                extra["trail_x"][i], extra["trail_y"][i] = tr.x, tr.y
                extra["trail_x_err"][i], extra["trail_y_err"][i] = tr.x_err, tr.y_err
                extra["trail_length_px"][i], extra["trail_angle"][i] = tr.length, tr.angle
                cols["trailLengthErr"][i], cols["trailAngleErr"][i] = tr.length_err, tr.angle_err
                cols["trailFlux"][i], cols["trailFluxErr"][i] = tr.flux, tr.flux_err
                cols["trailChi2"][i], cols["trailNdata"][i] = tr.chi2, tr.ndata
                reach = 0.5 * tr.length + fwhm
                ends_x = tr.x + np.array([-1, 1]) * reach * math.cos(tr.angle)
                ends_y = tr.y + np.array([-1, 1]) * reach * math.sin(tr.angle)
                ex = np.clip(np.rint(ends_x).astype(int), 0, nx - 1)
                ey = np.clip(np.rint(ends_y).astype(int), 0, ny - 1)
                off = (ends_x < 0) | (ends_x > nx - 1) | (ends_y < 0) | (ends_y > ny - 1)
                cols["trail_flag_edge"][i] = bool(
                    off.any() or (msk[ey, ex] & mask_bits("EDGE")).any()
                )

    cols["x"][i], cols["y"][i] = x, y
    cols["isNegative"][i] = bool(det.is_negative)
    cols["snr"][i] = abs(float(det.significance))
    cols["bboxSize"][i] = max(bx1 - bx0 + 1, by1 - by0 + 1)
    labels = det_all.footprints[by0 : by1 + 1, bx0 : bx1 + 1]
    foot = (labels == det.footprint) | ((labels == det.partner_footprint) & (labels != 0))
    _flags(cols, i, msk, foot, (bx0, by0, bx1, by1), x, y)


def _vertex(sig: NDArray[np.float32], x: int, y: int, axis: int) -> float:
    """Offset of the parabola's vertex through the peak and its two neighbours on ``axis``."""
    n = sig.shape[axis]
    c = y if axis == 0 else x
    if c < 1 or c > n - 2:
        return 0.0
    if axis == 0:
        a, b, d = float(sig[y - 1, x]), float(sig[y, x]), float(sig[y + 1, x])
    else:
        a, b, d = float(sig[y, x - 1]), float(sig[y, x]), float(sig[y, x + 1])
    den = a - 2 * b + d
    return float(np.clip(0.5 * (a - d) / den, -0.5, 0.5)) if den != 0 else 0.0
