"""Cosmic rays: find pixels sharper than the PSF allows, then interpolate over them.

The test is L.A.Cosmic's idea (van Dokkum 2001) in its cheapest form. A cosmic ray deposits its
charge in one or a few pixels, so a pixel's *excess* over the mean of its eight neighbours is a
large part of its value; light that came through the atmosphere and optics is spread by the PSF,
so for any star or galaxy the excess is at most ``k`` times the neighbours' mean, where ``k`` is
fixed by the PSF's width. A seed pixel has an excess that is both significant (``threshold_sigma``
times its noise) and sharper than ``sharpness_factor * k`` times the neighbours' mean. Seeds then
grow into adjacent pixels whose value stands out from their unflagged neighbours at
``grow_sigma``. A 2048^2 image takes a few tens of milliseconds (astroscrappy, the full iterative
L.A.Cosmic, takes several seconds).

Saturated pixels and their surroundings are never seeds (their shape means nothing). Masked pixels
(bad columns, no data) are never seeds either, and never neighbours: a seed's neighbours are taken
in opposite pairs, both usable, so a star sitting next to a bad column keeps a fair (symmetric)
neighbourhood and its core does not look sharp. Only pixels above ``threshold_sigma`` are tested,
point by point, so the cost is a few whole-image operations.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ._arrays import grow_mask
from .config import CosmicRayConfig

__all__ = ["find_cosmic_rays", "interpolate_masked", "psf_sharpness"]

_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def psf_sharpness(fwhm_px: float) -> float:
    """Largest ratio of a pixel's excess over its 8 neighbours' mean to that mean, for a PSF.

    Computed for a circular Gaussian of the given FWHM centred on a pixel (the sharpest case).
    """
    sigma = fwhm_px / (2 * math.sqrt(2 * math.log(2)))
    mean_nbr = (4 * math.exp(-0.5 / sigma**2) + 4 * math.exp(-1.0 / sigma**2)) / 8
    return (1 - mean_nbr) / mean_nbr


def _gather(
    plane: NDArray, ys: NDArray[np.intp], xs: NDArray[np.intp], dy: int, dx: int, fill: object
) -> NDArray:
    """``plane[ys + dy, xs + dx]``, with ``fill`` outside the image."""
    ny, nx = plane.shape
    yy, xx = ys + dy, xs + dx
    inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    vals = plane[np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)]
    return np.where(inside, vals, fill)


def _neighbour_mean_at(
    image: NDArray[np.float32],
    use: NDArray[np.bool_],
    ys: NDArray[np.intp],
    xs: NDArray[np.intp],
    *,
    symmetric: bool,
) -> NDArray[np.float64]:
    """Mean of the usable 8-neighbours of the pixels (ys, xs); NaN where none is usable.

    With ``symmetric`` a neighbour counts only if the one opposite it does too, so the mean of a
    point-symmetric profile is unbiased however many neighbours are masked (a star on a bad
    column keeps a fair neighbourhood).
    """
    total = np.zeros(ys.size)
    count = np.zeros(ys.size)
    for dy, dx in _OFFSETS:
        if symmetric and (dy, dx) < (0, 0):
            continue
        ok = _gather(use, ys, xs, dy, dx, False)
        val = _gather(image, ys, xs, dy, dx, 0.0)
        if symmetric:
            ok = ok & _gather(use, ys, xs, -dy, -dx, False)
            val = val + _gather(image, ys, xs, -dy, -dx, 0.0)
        total += np.where(ok, val, 0.0)
        count += np.where(ok, 2 if symmetric else 1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def find_cosmic_rays(
    image: NDArray[np.floating],
    variance: NDArray[np.floating],
    bad: NDArray[np.bool_] | None = None,
    saturated: NDArray[np.bool_] | None = None,
    *,
    fwhm_px: float,
    config: CosmicRayConfig | None = None,
) -> NDArray[np.bool_]:
    """Flag cosmic-ray pixels on a background-subtracted image.

    Parameters
    ----------
    image
        2-D background-subtracted image, counts.
    variance
        Per-pixel variance, counts^2, same shape.
    bad
        Pixels whose value means nothing (bad columns, no data, non-finite): never flagged, never
        used as neighbours.
    saturated
        Saturated pixels: never flagged; pixels within two of them are not seeds.
    fwhm_px
        PSF FWHM (pixels); sets how sharp real sources can be.
    config
        Thresholds and the sharpness safety factor.

    Returns
    -------
    numpy.ndarray of bool
        Cosmic-ray pixels, same shape as ``image``.
    """
    config = config or CosmicRayConfig()
    data = np.asarray(image, dtype=np.float32)
    var = np.asarray(variance, dtype=np.float32)
    shape = data.shape
    bad = np.zeros(shape, bool) if bad is None else np.asarray(bad, bool)
    saturated = np.zeros(shape, bool) if saturated is None else np.asarray(saturated, bool)
    use = ~(bad | saturated) & np.isfinite(data)
    # Only pixels that are themselves significant can be seeds: test the rest point by point.
    limit2 = np.float32(config.threshold_sigma**2 * 9 / 8)  # 9/8: noise of the neighbours' mean
    with np.errstate(invalid="ignore", over="ignore"):
        cand = use & (data > 0) & (data * data > limit2 * var)
    if saturated.any():
        cand &= ~grow_mask(saturated, 2)
    ys, xs = np.nonzero(cand)
    cr = np.zeros(shape, bool)
    if ys.size == 0:
        return cr
    nmean = _neighbour_mean_at(data, use, ys, xs, symmetric=True)
    value = data[ys, xs].astype(np.float64)
    excess = value - nmean
    sigma = np.sqrt(np.maximum(var[ys, xs].astype(np.float64), 1e-12))
    k = psf_sharpness(max(fwhm_px, config.min_fwhm_px))
    with np.errstate(invalid="ignore"):
        seed = (excess > config.threshold_sigma * 1.0607 * sigma) & (
            excess > config.sharpness_factor * k * np.maximum(nmean, 0.0)
        )
    if not seed.any():
        return cr
    cr[ys[seed], xs[seed]] = True
    grow_use = use & ~grow_mask(saturated, 2) if saturated.any() else use
    return _grow(data, var, grow_use, use, cr, k, config)


def _grow(
    data: NDArray[np.float32],
    var: NDArray[np.float32],
    use: NDArray[np.bool_],
    nbr_use: NDArray[np.bool_],
    cr: NDArray[np.bool_],
    k: float,
    config: CosmicRayConfig,
) -> NDArray[np.bool_]:
    """Add neighbours of flagged pixels that stand out from their unflagged neighbours."""
    cr = cr.copy()
    ny, nx = data.shape
    frontier = np.argwhere(cr)
    for _ in range(3):
        cand = set()
        for dy, dx in _OFFSETS:
            yy, xx = frontier[:, 0] + dy, frontier[:, 1] + dx
            ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            cand.update(zip(yy[ok].tolist(), xx[ok].tolist(), strict=True))
        if not cand:
            break
        ys, xs = np.array(sorted(cand)).T
        keep = use[ys, xs] & ~cr[ys, xs]
        ys, xs = ys[keep], xs[keep]
        if ys.size == 0:
            break
        nmean = _neighbour_mean_at(data, nbr_use & ~cr, ys, xs, symmetric=False)
        excess = data[ys, xs] - nmean
        sigma = np.sqrt(np.maximum(var[ys, xs].astype(np.float64), 1e-12))
        with np.errstate(invalid="ignore"):
            add = (excess > config.grow_sigma * sigma) & (excess > k * np.maximum(nmean, 0.0))
        if not add.any():
            break
        cr[ys[add], xs[add]] = True
        frontier = np.column_stack([ys[add], xs[add]])
    return cr


def interpolate_masked(
    image: NDArray[np.floating],
    variance: NDArray[np.floating],
    fill: NDArray[np.bool_],
    usable: NDArray[np.bool_] | None = None,
    *,
    sigma_px: float = 1.5,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Replace the ``fill`` pixels by a Gaussian-weighted mean of the usable pixels around them.

    Normalised convolution (Knutsson & Westin 1993): ``G * (image w) / G * w`` with ``w`` the
    usable pixels, computed in a box about each connected group of ``fill`` pixels. The variance
    plane is interpolated the same way. Pixels with no usable data within ~4 sigma are set to 0
    (the background, on a background-subtracted image) with the median variance of the box.

    Parameters
    ----------
    image, variance
        2-D planes (counts, counts^2).
    fill
        Pixels to replace.
    usable
        Pixels that may be used (default: not ``fill`` and finite).
    sigma_px
        Width of the Gaussian weight, pixels.

    Returns
    -------
    tuple of numpy.ndarray
        New image and variance planes (copies, float32).
    """
    out = np.array(image, dtype=np.float32, copy=True)
    var = np.array(variance, dtype=np.float32, copy=True)
    fill = np.asarray(fill, bool)
    if not fill.any():
        return out, var
    usable = (~fill & np.isfinite(out)) if usable is None else (np.asarray(usable, bool) & ~fill)
    labels, _ = ndimage.label(fill, structure=np.ones((3, 3)))
    margin = math.ceil(4 * sigma_px) + 1
    ny, nx = out.shape
    for sl in ndimage.find_objects(labels):
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - margin, 0), min(sl[0].stop + margin, ny)
        x0, x1 = max(sl[1].start - margin, 0), min(sl[1].stop + margin, nx)
        box = (slice(y0, y1), slice(x0, x1))
        w = usable[box].astype(np.float64)
        den = ndimage.gaussian_filter(w, sigma_px, mode="constant")
        num = ndimage.gaussian_filter(np.where(w > 0, out[box], 0.0), sigma_px, mode="constant")
        vnum = ndimage.gaussian_filter(np.where(w > 0, var[box], 0.0), sigma_px, mode="constant")
        target = fill[box]
        ok = den > 1e-3
        sub_img, sub_var = out[box], var[box]
        good_var = var[box][w > 0]
        floor = float(np.median(good_var)) if good_var.size else 1.0
        with np.errstate(invalid="ignore", divide="ignore"):
            sub_img[target] = np.where(ok, num / den, 0.0)[target]
            sub_var[target] = np.where(ok, vnum / den, floor)[target]
    return out, var
