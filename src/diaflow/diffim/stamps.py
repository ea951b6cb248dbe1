"""Choosing the stars that constrain the matching kernel.

A kernel star must be bright (peak signal-to-noise above a threshold in both images), unsaturated,
compact (a star rather than a galaxy, judged against the narrower image's PSF), the brightest peak
in its fitting window, and free of untrusted pixels (bad, saturated, cosmic ray, edge...) in both
images over the whole area that enters the fit. Stars are spread over the detector by giving each
cell of a coarse grid an equal share, so that the kernel's spatial variation is constrained
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..image.psf import PsfModel
from .config import StampConfig

__all__ = ["StampCandidates", "find_kernel_stars", "window_clean"]

_PEAK_BOX = 2
"""Half-size of the box in which a candidate must be the highest pixel."""
_NEIGHBOUR_SNR = 5.0
"""Peaks above this signal-to-noise count as neighbours when checking isolation."""


@dataclass(frozen=True)
class StampCandidates:
    """Kernel stars, brightest first within each grid cell."""

    x: NDArray[np.intp]
    """0-based column of each star's peak pixel."""
    y: NDArray[np.intp]
    """0-based row of each star's peak pixel."""
    snr: NDArray[np.float64]
    """Peak signal-to-noise in the image that is convolved."""
    n_peaks: int
    """Peaks above the threshold before any cut."""


def window_clean(
    bad: NDArray[np.bool_], x: NDArray[np.intp], y: NDArray[np.intp], half: int
) -> NDArray[np.bool_]:
    """True where the ``(2 half + 1)``-square window centred on (x, y) holds no ``bad`` pixel.

    Windows must lie inside the image.
    """
    offs = np.arange(-half, half + 1)
    windows = bad[(y[:, None] + offs)[:, :, None], (x[:, None] + offs)[:, None, :]]
    return np.asarray(~windows.any(axis=(1, 2)))


def _local_peaks(
    image: NDArray[np.floating],
    var: NDArray[np.floating],
    bad: NDArray[np.bool_],
    threshold: float,
    margin: int,
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Good pixels above ``threshold`` sigma that are the maximum of their 5x5 box."""
    ny, nx = image.shape
    # Heights above the image's median level (the inputs should be background subtracted; this
    # keeps a leftover sky from turning every pixel into a candidate). One pass with the
    # smallest variance of a sample, then the exact test on what passes.
    level = float(np.median(image[::8, ::8]))
    floor = float(np.percentile(var[::8, ::8], 1))
    ys, xs = np.nonzero(image > np.float32(level + threshold * np.sqrt(max(floor, 0.0))))
    keep = (ys >= margin) & (ys < ny - margin) & (xs >= margin) & (xs < nx - margin)
    ys, xs = ys[keep], xs[keep]
    values = image[ys, xs] - level
    keep = (values > 0) & (values**2 > threshold**2 * var[ys, xs]) & ~bad[ys, xs]
    ys, xs = ys[keep], xs[keep]
    if len(ys) == 0:
        return ys, xs
    values = values[keep] + level
    is_peak = np.ones(len(ys), dtype=bool)
    for dy in range(-_PEAK_BOX, _PEAK_BOX + 1):
        for dx in range(-_PEAK_BOX, _PEAK_BOX + 1):
            if dy or dx:
                other = image[ys + dy, xs + dx]
                # Ties go to the first pixel in raster order.
                is_peak &= (values > other) | (
                    (values == other) & ((dy > 0) | (dy == 0 and dx > 0))
                )
    return ys[is_peak], xs[is_peak]


def find_kernel_stars(
    *,
    narrow: NDArray[np.float32],
    narrow_var: NDArray[np.float32],
    broad: NDArray[np.float32],
    broad_var: NDArray[np.float32],
    bad: NDArray[np.bool_],
    narrow_saturation: float,
    broad_saturation: float,
    narrow_psf: PsfModel | None,
    fit_half_px: int,
    kernel_half_px: int,
    config: StampConfig,
) -> StampCandidates:
    """Find kernel stars in an aligned pair of images.

    Parameters
    ----------
    narrow, narrow_var
        Image with the narrower PSF (the one convolved) and its variance, counts and counts^2.
    broad, broad_var
        The other image and its variance.
    bad
        Untrusted pixels of either image (OR of both masks' bad planes, non-finite values).
    narrow_saturation, broad_saturation
        Saturation levels of the two images, in their own units.
    narrow_psf
        PSF of the narrow image, for the compactness test (skipped when ``None``).
    fit_half_px
        Half-size of the fitting window about each star.
    kernel_half_px
        Kernel half-width: the narrow image must be clean over the fitting window grown by it.
    config
        Selection thresholds.

    Returns
    -------
    StampCandidates
        The chosen stars (possibly none).
    """
    ny, nx = narrow.shape
    outer = fit_half_px + kernel_half_px
    ys, xs = _local_peaks(narrow, narrow_var, bad, _NEIGHBOUR_SNR, margin=outer + 1)
    empty = StampCandidates(
        np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0), n_peaks=len(ys)
    )
    if len(ys) == 0:
        return empty
    level = float(np.median(narrow[::8, ::8]))
    peak_snr = (narrow[ys, xs] - level) / np.sqrt(narrow_var[ys, xs])
    # Isolation: no higher neighbouring peak within the fitting window.
    order = np.argsort(-narrow[ys, xs], kind="stable")
    ys, xs, peak_snr = ys[order], xs[order], peak_snr[order]
    bright = peak_snr > config.min_snr
    n_bright = int(bright.sum())
    isolated = np.ones(len(ys), dtype=bool)
    for k in np.flatnonzero(bright):
        # Peaks are sorted by height: only earlier (higher) ones can spoil star k.
        near = (np.abs(ys[:k] - ys[k]) <= fit_half_px) & (np.abs(xs[:k] - xs[k]) <= fit_half_px)
        isolated[k] = not near.any()
    sel = bright & isolated
    ys, xs, peak_snr = ys[sel], xs[sel], peak_snr[sel]
    if len(ys) == 0:
        return StampCandidates(empty.x, empty.y, empty.snr, n_peaks=n_bright)
    # Unsaturated in both images, and significant in the broad one too.
    broad_level = float(np.median(broad[::8, ::8]))
    broad_snr = (broad[ys, xs] - broad_level) / np.sqrt(np.maximum(broad_var[ys, xs], 1e-30))
    ok = (
        (narrow[ys, xs] < config.max_peak_fraction * narrow_saturation)
        & (broad[ys, xs] < config.max_peak_fraction * broad_saturation)
        & (broad_snr > config.min_snr / 3)
    )
    ys, xs, peak_snr = ys[ok], xs[ok], peak_snr[ok]
    # Clean over everything that enters the fit.
    if len(ys):
        clean = window_clean(bad, xs, ys, outer)
        ys, xs, peak_snr = ys[clean], xs[clean], peak_snr[clean]
    if len(ys) and narrow_psf is not None and config.min_compactness > 0:
        keep = _compact(narrow, xs, ys, narrow_psf, fit_half_px, config.min_compactness)
        ys, xs, peak_snr = ys[keep], xs[keep], peak_snr[keep]
    chosen = _spread(xs, ys, peak_snr, (ny, nx), config.grid_cells, config.max_stamps)
    return StampCandidates(xs[chosen], ys[chosen], peak_snr[chosen], n_peaks=n_bright)


def _compact(
    image: NDArray[np.float32],
    xs: NDArray[np.intp],
    ys: NDArray[np.intp],
    psf: PsfModel,
    half: int,
    min_ratio: float,
) -> NDArray[np.bool_]:
    """Whether each source's peak-to-3x3-core ratio is at least ``min_ratio`` times the PSF's.

    The PSF's ratio is taken at the detector centre (it changes little over a detector); the
    source's core is measured above the median of its window's border.
    """
    ny, nx = image.shape
    p = psf.kernel((nx - 1) / 2.0, (ny - 1) / 2.0)
    c = p.shape[0] // 2
    psf_ratio = p[c, c] / p[c - 1 : c + 2, c - 1 : c + 2].sum()
    offs = np.arange(-half, half + 1)
    win = image[(ys[:, None] + offs)[:, :, None], (xs[:, None] + offs)[:, None, :]]
    win = win.astype(np.float64)
    border = np.concatenate([win[:, 0], win[:, -1], win[:, 1:-1, 0], win[:, 1:-1, -1]], axis=1)
    core = (
        win[:, half - 1 : half + 2, half - 1 : half + 2] - np.median(border, axis=1)[:, None, None]
    )
    total = core.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = core[:, 1, 1] / total
    return np.asarray((total > 0) & (ratio >= min_ratio * psf_ratio))


def _spread(
    xs: NDArray[np.intp],
    ys: NDArray[np.intp],
    snr: NDArray[np.float64],
    shape: tuple[int, int],
    cells: int,
    max_stamps: int,
) -> NDArray[np.intp]:
    """Indices of up to ``max_stamps`` stars: an equal share per grid cell, then the brightest."""
    if len(xs) <= max_stamps:
        return np.argsort(-snr, kind="stable")
    ny, nx = shape
    cell = (ys * cells // ny) * cells + (xs * cells // nx)
    share = max(1, max_stamps // (cells * cells))
    order = np.argsort(-snr, kind="stable")
    rank_in_cell = np.zeros(len(xs), dtype=np.intp)
    seen: dict[int, int] = {}
    for i in order.tolist():
        c = int(cell[i])
        rank_in_cell[i] = seen.get(c, 0)
        seen[c] = rank_in_cell[i] + 1
    first = order[rank_in_cell[order] < share]
    rest = order[rank_in_cell[order] >= share]
    return np.concatenate([first, rest])[:max_stamps]
