"""Outlier rejection across PSF-matched inputs: find what changes, keep what persists.

Each input is compared with a robust model of the sky, the per-pixel median of the others. The
difference, in units of its noise, is searched for outliers both pixel by pixel (cosmic rays are
sharp) and after smoothing with the common PSF (faint asteroids, trails and transients are spread
over many pixels). Each input's outliers are split into objects (one per peak); an object is
*transient*, and masked in that input, when few inputs have an outlier within about one FWHM of
its peak: at most ``max_epoch_fraction`` of those covering it. A variable star, which differs
from the median in most inputs, is kept and so coadds to its mean brightness; a transient right
beside it is still masked, and so is one on top of it if it deviates far more than the
variability there. A transient's mask follows the difference down to a low threshold (no
further than ``max_grow_fwhm`` from it, never into an object of the same input that recurs) and
then grows by a radius that increases with its brightness, to take its wings. This follows the
logic of the Rubin pipelines' ``CompareWarp`` coaddition (AlSayyad 2018, DMTN-080).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import fft, ndimage

from ..errors import ConfigError

__all__ = ["RejectConfig", "Rejection", "find_outliers", "robust_median"]


@dataclass(frozen=True, kw_only=True)
class RejectConfig:
    """How transient outliers are found and masked."""

    threshold_sigma: float = 5.0
    """Detection threshold of an outlier, per pixel and on the PSF-smoothed difference (sigma)."""
    grow_threshold_sigma: float = 2.5
    """Masks of transients extend to connected pixels above this (sigma, either map)..."""
    max_grow_fwhm: float = 2.0
    """...at most this many FWHMs of the common PSF away from the outlier..."""
    grow_radius_fwhm: float = 0.5
    """...and then grow by at least this many FWHMs..."""
    wing_sigma: float = 0.5
    """...and more for bright outliers: until their PSF-shaped light falls below this many sigma
    per pixel (at most ``max_grow_fwhm`` FWHMs)."""
    recur_sigma: float = 3.5
    """An input counts as an outlier near a place, for telling variable from transient, when its
    smoothed difference exceeds this (sigma)."""
    max_epoch_fraction: float = 0.4
    """An object is transient if at most this fraction of the inputs covering it (and always if
    one input only) are outliers near its peak."""
    recurring_ratio: float = 3.0
    """Where outliers recur (variable sources), an input is masked only if it deviates from the
    median this many times more than the inputs that are not allowed to be transient there."""
    flux_tolerance: float = 0.02
    """Fraction of the model added in quadrature to the noise, for PSF-matching imperfections on
    bright sources."""
    min_inputs: int = 3
    """Pixels covered by fewer inputs are not tested (a median of two cannot tell which is off)."""
    streak_min_length_fwhm: float = 8.0
    """A transient mask at least this long (FWHMs) and ``streak_min_elongation`` times longer
    than wide is a streak (a satellite or aircraft trail): it is masked along its whole line
    across the input, also where it crosses stars and where too few inputs cover the patch to
    test it; 0 turns this off."""
    streak_min_elongation: float = 6.0
    """Length over width of a streak's mask."""

    def __post_init__(self) -> None:
        checks = (
            (self.threshold_sigma > 0, "threshold_sigma must be > 0", self.threshold_sigma),
            (
                0 < self.grow_threshold_sigma <= self.threshold_sigma,
                "grow_threshold_sigma must be in (0, threshold_sigma]",
                self.grow_threshold_sigma,
            ),
            (self.grow_radius_fwhm >= 0, "grow_radius_fwhm must be >= 0", self.grow_radius_fwhm),
            (self.max_grow_fwhm >= 0, "max_grow_fwhm must be >= 0", self.max_grow_fwhm),
            (self.wing_sigma > 0, "wing_sigma must be > 0", self.wing_sigma),
            (self.recur_sigma > 0, "recur_sigma must be > 0", self.recur_sigma),
            (
                0 <= self.max_epoch_fraction < 1,
                "max_epoch_fraction must be in [0, 1)",
                self.max_epoch_fraction,
            ),
            (self.flux_tolerance >= 0, "flux_tolerance must be >= 0", self.flux_tolerance),
            (self.recurring_ratio > 1, "recurring_ratio must be > 1", self.recurring_ratio),
            (self.min_inputs >= 3, "min_inputs must be >= 3", self.min_inputs),
        )
        for ok, message, value in checks:
            if not ok:
                raise ConfigError(f"RejectConfig: {message}, got {value!r}")


@dataclass(frozen=True)
class Rejection:
    """The outcome of outlier rejection."""

    rejected: NDArray[np.bool_]
    """(n_inputs, ny, nx): pixels masked as transient outliers in each input."""
    n_transient: NDArray[np.int64]
    """Outlier objects masked in each input."""
    n_persistent: NDArray[np.int64]
    """Outlier objects kept in each input because they recur (variable sources)."""


def robust_median(
    images: NDArray[np.float32], valid: NDArray[np.bool_], *, rows: int = 128
) -> tuple[NDArray[np.float32], NDArray[np.int16]]:
    """For each input, the per-pixel median of the *other* valid inputs; and the valid count.

    Leaving the input out keeps its own noise and outliers out of the model it is compared with
    (with three inputs, the median of all is the input itself a third of the time). NaN where no
    other input has data.

    Returns
    -------
    medians
        (n_inputs, ny, nx) float32.
    count
        (ny, nx) number of valid inputs.
    """
    n, ny, nx = images.shape
    medians = np.full((n, ny, nx), np.nan, dtype=np.float32)
    count = valid.sum(axis=0).astype(np.int16)
    for r0 in range(0, ny, rows):
        sl = slice(r0, min(r0 + rows, ny))
        block = np.where(valid[:, sl], images[:, sl], np.float32(np.nan))
        order = np.argsort(block, axis=0)  # NaN sorts last
        ordered = np.take_along_axis(block, order, axis=0)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(n)[:, None, None], axis=0)
        k = count[sl].astype(np.intp)
        for i in range(n):
            own = valid[i, sl]
            m = k - own  # how many others
            lo, hi = (m - 1) // 2, m // 2
            # Index j among the others is j in the sorted stack, or j + 1 past the input's rank.
            lo = np.clip(lo + (own & (lo >= rank[i])), 0, n - 1)
            hi = np.clip(hi + (own & (hi >= rank[i])), 0, n - 1)
            med = 0.5 * (
                np.take_along_axis(ordered, lo[None], axis=0)[0]
                + np.take_along_axis(ordered, hi[None], axis=0)[0]
            )
            medians[i, sl] = np.where(m > 0, med, np.nan)
    return medians, count


def _inverse(variance: NDArray[np.float32], valid: NDArray[np.bool_]) -> NDArray[np.float32]:
    """1 / variance where valid, 0 elsewhere."""
    out = np.zeros(variance.shape, dtype=np.float32)
    np.divide(1.0, variance, out=out, where=valid & (variance > 0))
    return out


def _mad_std(values: NDArray[np.float32]) -> float:
    """Robust standard deviation (1.4826 MAD), from at most ~200k of the values."""
    values = values[:: max(1, values.size // 200_000)]
    values = values[np.isfinite(values)]
    if values.size < 10:
        return 1.0
    med = np.median(values)
    s = 1.4826 * float(np.median(np.abs(values - med)))
    return s if s > 0 else 1.0


class _Smoother:
    """FFT convolution with one fixed kernel (the PSF or its square)."""

    def __init__(self, shape: tuple[int, int], kernel: NDArray[np.float64]) -> None:
        h = kernel.shape[0] // 2
        self.shape = shape
        self.fshape = tuple(fft.next_fast_len(s + 2 * h, real=True) for s in shape)
        k = np.zeros(self.fshape, dtype=np.float32)
        k[: h + 1, : h + 1] = kernel[h:, h:]
        k[: h + 1, -h:] = kernel[h:, :h]
        k[-h:, : h + 1] = kernel[:h, h:]
        k[-h:, -h:] = kernel[:h, :h]
        self.kernel_hat = fft.rfft2(k)

    def __call__(self, image: NDArray[np.float32]) -> NDArray[np.float32]:
        out = fft.irfft2(fft.rfft2(image, self.fshape) * self.kernel_hat, self.fshape)
        return out[: self.shape[0], : self.shape[1]]


def find_outliers(
    images: NDArray[np.float32],
    variances: NDArray[np.float32],
    valid: NDArray[np.bool_],
    psf: NDArray[np.float64],
    fwhm_px: float,
    *,
    config: RejectConfig | None = None,
) -> Rejection:
    """Find transient outliers in a stack of PSF-matched inputs on one grid.

    Parameters
    ----------
    images, variances
        (n_inputs, ny, nx) float32, on one photometric scale; values where ``valid`` is false
        are ignored.
    valid
        (n_inputs, ny, nx) bool: pixels with usable data.
    psf
        Stamp of the common PSF (the matched filter for faint outliers).
    fwhm_px
        FWHM of the common PSF, pixels (sets the grow radius).
    config
        Thresholds; defaults to :class:`RejectConfig()`.
    """
    config = config or RejectConfig()
    n, ny, nx = images.shape
    models, count = robust_median(images, valid)
    testable = count >= config.min_inputs
    inv_var_sum = np.zeros((ny, nx), dtype=np.float32)
    for i in range(n):
        inv_var_sum += _inverse(variances[i], valid[i])
    smooth = _Smoother((ny, nx), psf)
    smooth_sq = _Smoother((ny, nx), psf**2)
    low = np.zeros((n, ny, nx), dtype=bool)
    seeds = np.zeros((n, ny, nx), dtype=bool)
    peak = np.zeros((n, ny, nx), dtype=np.float32)  # significance, either map
    smooth_sig = np.zeros((n, ny, nx), dtype=np.float32)  # signed, after smoothing
    for i in range(n):
        ok = valid[i] & testable
        if not ok.any():
            continue
        model = np.nan_to_num(models[i])
        # The median of m values has about pi/2 times the variance of their weighted mean.
        model_var = (np.pi / 2) / np.maximum(inv_var_sum - _inverse(variances[i], valid[i]), 1e-30)
        tol_var = (config.flux_tolerance * model) ** 2
        diff = np.where(ok, images[i] - model, np.float32(0)).astype(np.float32)
        var = np.where(ok, variances[i] + model_var + tol_var, np.float32(0)).astype(np.float32)
        z = np.zeros((ny, nx), dtype=np.float32)
        np.divide(diff, np.sqrt(var), out=z, where=ok)
        z /= _mad_std(z[ok])
        zs = smooth_sig[i]
        np.divide(smooth(diff), np.sqrt(np.maximum(smooth_sq(var), 1e-30)), out=zs, where=ok)
        zs /= _mad_std(zs[ok])
        zs[~ok] = 0
        np.abs(z, out=z)
        np.maximum(z, np.abs(zs), out=peak[i])
        peak[i][~ok] = 0
        seeds[i] = peak[i] > config.threshold_sigma
        low[i] = peak[i] > config.grow_threshold_sigma
    # How many inputs have an outlier (on the smoothed difference, above ``recur_sigma``) within
    # about one FWHM of each place: a variable source recurs, a transient does not. A bright
    # transient pulls the median of the others up and so leaves a weak (~1 sigma) negative echo
    # in every other input, which ``recur_sigma`` must stay above.
    box = max(3, 2 * round(fwhm_px / 2) + 1)
    allowed = np.maximum(1, np.floor(config.max_epoch_fraction * count)).astype(np.int16)
    nearby = np.zeros((ny, nx), dtype=np.int16)
    for i in range(n):
        nearby += ndimage.maximum_filter(np.abs(smooth_sig[i]) > config.recur_sigma, size=box)
    recurring = nearby > allowed
    extreme_seed, extreme_low, ry, rx = _stand_out(
        images,
        variances,
        valid,
        models,
        inv_var_sum,
        recurring & testable,
        allowed,
        config,
    )
    reach = max(1, round(config.max_grow_fwhm * fwhm_px))
    growth = _Growth(psf, config, fwhm_px)
    rejected = np.zeros((n, ny, nx), dtype=bool)
    n_transient = np.zeros(n, dtype=np.int64)
    n_persistent = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if not seeds[i].any():
            continue
        transient, persistent, n_transient[i], n_persistent[i] = _classify(
            seeds[i], smooth_sig[i], nearby, allowed, box
        )
        core = transient
        core[ry, rx] |= extreme_seed[i]
        if not core.any():
            continue
        # Masks grow through weak outliers and then by a disk, but never into an object of
        # this input that recurs (a variable star beside the transient stays whole).
        keep_out = persistent & ~core
        through = low[i] & ~keep_out
        through[ry, rx] |= extreme_low[i]
        rejected[i] = _grow(core, through, peak[i], reach, growth) & valid[i]
        if config.streak_min_length_fwhm > 0:
            rejected[i] |= _streak_bands(rejected[i], fwhm_px, config) & valid[i]
    return Rejection(rejected, n_transient, n_persistent)


def _streak_bands(
    mask: NDArray[np.bool_], fwhm_px: float, config: RejectConfig
) -> NDArray[np.bool_]:
    """Bands along the full lines of the long, thin components of one input's transient mask.

    A satellite trail crosses the whole input, but its mask stops where the trail runs over a
    star (whose pixels recur in every input, so they are kept) or over a corner that too few
    inputs cover to be tested. Each component's axis and extent come from the second moments of
    its pixels (a uniform bar of length ``L`` has variance ``L^2 / 12`` along it).
    """
    out = np.zeros(mask.shape, dtype=bool)
    min_len = config.streak_min_length_fwhm * fwhm_px
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return out
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    lines = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or sizes[k] < min_len * 2:
            continue
        extent = max(box[0].stop - box[0].start, box[1].stop - box[1].start)
        if extent < min_len / np.sqrt(2):
            continue
        yy, xx = np.nonzero(labels[box] == k)
        y, x = yy + box[0].start, xx + box[1].start
        cy, cx = y.mean(), x.mean()
        cov = np.cov(np.vstack([x - cx, y - cy]))
        values, vectors = np.linalg.eigh(cov)
        length = np.sqrt(12 * max(values[1], 0.0))
        width = np.sqrt(12 * max(values[0], 0.0))
        if length < min_len or length < config.streak_min_elongation * max(width, 1.0):
            continue
        lines.append((cx, cy, vectors[:, 1], 0.5 * width + 0.25 * fwhm_px))
    if not lines:
        return out
    ny, nx = mask.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    for cx, cy, (ux, uy), half in lines:
        out |= np.abs((xx - cx) * uy - (yy - cy) * ux) <= half
    return out


def _stand_out(
    images: NDArray[np.float32],
    variances: NDArray[np.float32],
    valid: NDArray[np.bool_],
    models: NDArray[np.float32],
    inv_var_sum: NDArray[np.float32],
    where: NDArray[np.bool_],
    allowed: NDArray[np.int16],
    config: RejectConfig,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.intp], NDArray[np.intp]]:
    """Inputs that stand out from the rest at places where outliers recur.

    A cosmic ray or a trail across a variable star: its deviation from the median must be
    ``recurring_ratio`` times that of the input ranked just after the allowed number of
    transients, which is as wide as the variability however its epochs are spread (two states,
    a sinusoid, a slow fade) and ignores other transients at the same place.

    Returns (n_inputs, n_places) seed and low-threshold flags, and the places' (y, x).
    """
    n = images.shape[0]
    ry, rx = np.nonzero(where)
    seed = np.zeros((n, len(ry)), dtype=bool)
    weak = np.zeros((n, len(ry)), dtype=bool)
    if not len(ry):
        return seed, weak, ry, rx
    values = np.where(valid[:, ry, rx], images[:, ry, rx], np.nan)
    dev = np.nan_to_num(np.abs(values - np.nanmedian(values, axis=0)), nan=-1.0)
    rank = np.clip(n - 1 - allowed[ry, rx].astype(np.intp), 0, n - 1)
    reference = np.take_along_axis(np.sort(dev, axis=0), rank[None], axis=0)[0]
    for i in range(n):
        own = _inverse(variances[i, ry, rx], valid[i, ry, rx])
        var = variances[i, ry, rx] + (np.pi / 2) / np.maximum(inv_var_sum[ry, rx] - own, 1e-30)
        noise = np.sqrt(var + (config.flux_tolerance * models[i, ry, rx]) ** 2)
        ok = valid[i, ry, rx] & np.isfinite(noise)
        out = ok & (dev[i] > config.recurring_ratio * reference)
        seed[i] = out & (dev[i] > config.threshold_sigma * noise)
        weak[i] = out & (dev[i] > config.grow_threshold_sigma * noise)
    return seed, weak, ry, rx


def _classify(
    seeds: NDArray[np.bool_],
    smooth_sig: NDArray[np.float32],
    nearby: NDArray[np.int16],
    allowed: NDArray[np.int16],
    box: int,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], int, int]:
    """Split one input's outlier pixels into objects and sort them into transient/persistent.

    Objects are the peaks of the smoothed significance (at most one per ``box``), each taking
    the outlier pixels nearest to it, so that a transient next to a variable star is a separate
    object. An object is transient if few inputs have an outlier near its peak (``nearby``).
    """
    eight = np.ones((3, 3), dtype=bool)
    labels, n_comp = ndimage.label(seeds, structure=eight)
    masked = np.where(seeds, np.abs(smooth_sig), 0)
    peaks = seeds & (masked >= ndimage.maximum_filter(masked, size=box))
    index = np.arange(1, n_comp + 1)
    for y, x in ndimage.maximum_position(masked, labels, index):  # one peak per object at least
        peaks[y, x] = True
    peak_labels, n_peaks = ndimage.label(peaks, structure=eight)
    where = np.array(ndimage.maximum_position(masked, peak_labels, np.arange(1, n_peaks + 1)))
    where = where.reshape(-1, 2)
    py, px = where[:, 0], where[:, 1]
    is_transient = nearby[py, px] <= allowed[py, px]
    # Objects: pixels of a component go to their nearest peak (a component with one peak is one
    # object).
    peaks_in = np.bincount(labels[py, px], minlength=n_comp + 1)
    object_of = np.zeros(seeds.shape, dtype=np.int32)
    single = peaks_in[labels] == 1
    first_peak = np.zeros(n_comp + 1, dtype=np.int32)
    first_peak[labels[py, px]] = np.arange(1, n_peaks + 1)
    object_of[single & seeds] = first_peak[labels[single & seeds]]
    boxes = ndimage.find_objects(labels)
    for comp in np.flatnonzero(peaks_in > 1):
        sl = boxes[comp - 1]
        inside = labels[sl] == comp
        local = np.where(inside, peak_labels[sl], 0)
        _, (iy, ix) = ndimage.distance_transform_edt(local == 0, return_indices=True)
        object_of[sl][inside] = local[iy, ix][inside]
    transient_of = np.concatenate([[False], is_transient])
    transient = seeds & transient_of[object_of]
    persistent = seeds & ~transient
    return transient, persistent, int(is_transient.sum()), int((~is_transient).sum())


def _disk(radius: float) -> NDArray[np.bool_] | None:
    """Disk-shaped structuring element of ``radius`` pixels (``None`` below half a pixel)."""
    if radius < 0.5:
        return None
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.asarray(xx**2 + yy**2 <= radius**2 + 1e-9)


class _Growth:
    """How far beyond its low-threshold contour a transient's mask grows, by its brightness.

    An outlier of peak significance ``P`` is PSF-shaped; its light falls to ``wing_sigma`` per
    pixel at the radius where the PSF's profile is ``wing_sigma / P`` of its peak. The mask already
    reaches the ``grow_threshold_sigma`` contour, so it grows by the difference of the two radii
    (at least ``grow_radius_fwhm``, at most ``max_grow_fwhm`` FWHMs).
    """

    def __init__(self, psf: NDArray[np.float64], config: RejectConfig, fwhm_px: float) -> None:
        h = psf.shape[0] // 2
        yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
        r = np.hypot(xx, yy).ravel()
        order = np.argsort(r)
        # Outer envelope of the profile: the largest value at this radius or beyond.
        level = np.maximum.accumulate((psf.ravel() / psf.max())[order][::-1])[::-1]
        self.radius, self.level = r[order], level
        self.config = config
        self.low = config.grow_radius_fwhm * fwhm_px
        self.high = config.max_grow_fwhm * fwhm_px
        self._disks: dict[int, NDArray[np.bool_] | None] = {}

    def _radius_at(self, fraction: float) -> float:
        below = np.flatnonzero(self.level <= fraction)
        return float(self.radius[below[0]]) if below.size else float(self.radius[-1])

    def disk(self, peak: float) -> NDArray[np.bool_] | None:
        c = self.config
        extra = self._radius_at(c.wing_sigma / peak) - self._radius_at(
            c.grow_threshold_sigma / peak
        )
        radius = round(min(max(extra, self.low), self.high))
        if radius not in self._disks:
            self._disks[radius] = _disk(radius)
        return self._disks[radius]


def _grow(
    seeds: NDArray[np.bool_],
    allowed: NDArray[np.bool_],
    significance: NDArray[np.float32],
    reach: int,
    growth: _Growth,
) -> NDArray[np.bool_]:
    """Seeds grown through ``allowed`` pixels (at most ``reach`` away), then dilated by a disk
    that grows with each object's peak ``significance``.

    The growth runs object by object on small cut-outs: seeds are sparse, and a propagation over
    the whole frame costs one full pass per pixel of reach.
    """
    ny, nx = seeds.shape
    out = seeds.copy()
    labels, _ = ndimage.label(seeds, structure=np.ones((3, 3), dtype=bool))
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        disk = growth.disk(float(significance[box][labels[box] == k].max()))
        pad = reach + (disk.shape[0] // 2 if disk is not None else 0) + 1
        sl = (
            slice(max(box[0].start - pad, 0), min(box[0].stop + pad, ny)),
            slice(max(box[1].start - pad, 0), min(box[1].stop + pad, nx)),
        )
        core = labels[sl] == k
        near = ndimage.maximum_filter(core, size=2 * reach + 1)
        core = ndimage.binary_propagation(core, mask=allowed[sl] & near) | core
        if disk is not None:
            core = ndimage.binary_dilation(core, structure=disk) & (allowed[sl] | core)
        out[sl] |= core
    return out
