"""A spatially varying pixel PSF fitted from stars, and PSF photometry with it.

The scheme is PSFEx's (Bertin 2011). Each star's postage stamp is shifted by its sub-pixel
centroid so that its centre falls on the central pixel (cubic-spline resampling; masked pixels
are filled from the star's own radial profile first and stay masked), divided by its flux, and
every pixel of the model is fitted, by weighted least squares over the stars, as a polynomial of the
detector position. Fluxes are re-measured with the new model (PSF photometry), pixels in a star's
outskirts that stand out from the model (a neighbour's light) are masked, and stars whose
residuals are not those of a point source (galaxies, blends, cosmic-ray hits) are rejected, a
few times over. Weights come from the *model* (sky variance plus the model's photon noise), not
from the noisy pixel values, so bright pixels that happen to fluctuate high are not given less
weight, which would bias the profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ..errors import CalibrationError
from ..image import PixelPsf, PsfModel, poly_terms
from .config import PsfConfig
from .psf_solve import regularize_wings, solve_perturbation, solve_pixels

__all__ = ["PsfFit", "fit_psf", "psf_fluxes", "psf_stamp_size"]

_CLIP_PIXEL_SIGMA = 4.0
"""Outside 1.5 FWHM, a star's pixel this many sigmas off the model is masked (a neighbour)."""

_MODEL_ERROR = 0.02
"""Fraction of the model added (in quadrature) to each pixel's noise when judging a star."""


@dataclass(frozen=True)
class PsfFit:
    """A fitted PSF model with its quality figures."""

    psf: PixelPsf
    """The model: pixel stamps whose values are polynomials of the position."""
    used: NDArray[np.bool_]
    """For each input star, whether it entered the final fit."""
    chi2: NDArray[np.float64]
    """Reduced chi-square of each input star's core against the model (NaN if not fitted)."""
    flux: NDArray[np.float64]
    """PSF flux of each input star, counts (NaN if not fitted)."""
    residual_frac: float
    """RMS residual over RMS model in the used stars' cores (2 FWHM), all stars summed (so the
    bright ones dominate); noise included."""
    fwhm_px: float
    """Model FWHM at the detector centre, pixels."""


def psf_stamp_size(fwhm_px: float, config: PsfConfig) -> int:
    """Odd stamp side for a PSF of this FWHM: ``2 ceil(radius_fwhm * fwhm) + 1``, capped."""
    half = min(math.ceil(config.radius_fwhm * fwhm_px), (config.max_size_px - 1) // 2)
    return 2 * max(half, 4) + 1


def _cut(
    plane: NDArray[np.floating] | NDArray[np.bool_], ix: int, iy: int, half: int, fill: float
) -> NDArray[np.float64]:
    """(2 half + 1)^2 cut-out centred on (ix, iy); pixels outside the image take ``fill``."""
    ny, nx = plane.shape
    out = np.full((2 * half + 1, 2 * half + 1), fill, dtype=np.float64)
    y0, y1, x0, x1 = iy - half, iy + half + 1, ix - half, ix + half + 1
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = plane[sy0:sy1, sx0:sx1]
    return out


class _Stamps:
    """Star cut-outs re-centred once on their centroids, with their masks and sky variances.

    Masked pixels (defects, cosmic rays, neighbours' footprints grown by two pixels) are filled,
    before the shift, with the median of the star's unmasked pixels at the same radius, so the
    cubic-spline resampling does not ring around them; they stay masked (the shifted mask is
    grown by the interpolation's reach).
    """

    def __init__(
        self,
        image: NDArray[np.floating],
        variance: NDArray[np.floating],
        bad: NDArray[np.bool_],
        segmentation: NDArray[np.int32] | None,
        labels: NDArray[np.int64] | None,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        half: int,
    ) -> None:
        pad = half + 2
        self.ix, self.iy = np.round(x).astype(int), np.round(y).astype(int)
        self.dx, self.dy = x - self.ix, y - self.iy
        n, size = x.size, 2 * half + 1
        self.data = np.zeros((n, size, size))
        self.bad = np.ones((n, size, size), bool)
        self.sky_var = np.full(n, np.nan)
        r = np.hypot(*np.mgrid[-pad : pad + 1, -pad : pad + 1])
        ring = r > half - 2
        r_int = np.round(r).astype(int).ravel()
        crop = slice(pad - half, pad + half + 1)
        for k in range(n):
            d = _cut(image, self.ix[k], self.iy[k], pad, 0.0)
            b = _cut(bad, self.ix[k], self.iy[k], pad, 1.0) > 0
            if segmentation is not None and labels is not None:
                s = _cut(segmentation, self.ix[k], self.iy[k], pad, 0.0)
                foreign = (s != 0) & (s != labels[k])
                b |= ndimage.binary_dilation(foreign, iterations=2) if foreign.any() else foreign
            v = _cut(variance, self.ix[k], self.iy[k], pad, np.nan)
            sky = v[ring & ~b & np.isfinite(v)]
            self.sky_var[k] = float(np.median(sky)) if sky.size else np.nan
            if b.any():
                d = np.where(b, _radial_fill(d, b, r_int), d)
                moved = ndimage.shift(b.astype(np.float64), (-self.dy[k], -self.dx[k]), order=1)
                self.bad[k] = moved[crop, crop] > 0.01
            else:
                self.bad[k] = False
            shifted = ndimage.shift(d, (-self.dy[k], -self.dx[k]), order=3, mode="nearest")
            self.data[k] = shifted[crop, crop]
        self.half = half


def _radial_fill(
    d: NDArray[np.float64], b: NDArray[np.bool_], r_int: NDArray[np.intp]
) -> NDArray[np.float64]:
    """Per-pixel median of the unmasked pixels at the same (rounded) radius; 0 where none."""
    flat, bad = d.ravel(), b.ravel()
    out = np.zeros(flat.size)
    good = ~bad
    for radius in np.unique(r_int[bad]):
        ring = r_int == radius
        vals = flat[ring & good]
        out[ring] = float(np.median(vals)) if vals.size else 0.0
    return out.reshape(d.shape)


def _use_pixels(n_stars: int, config: PsfConfig) -> bool:
    return config.variation == "pixel" or (
        config.variation == "auto" and n_stars >= config.pixel_min_stars
    )


def _order_for(n_stars: int, config: PsfConfig) -> int:
    """Highest order up to ``config.order`` that the number of stars supports."""

    def needed(order: int) -> float:
        n_terms = (order + 1) * (order + 2) / 2
        if _use_pixels(n_stars, config):
            return config.stars_per_term * n_terms
        return n_terms + 2  # a few more stars than position terms, all pixels constrain them

    order = config.order
    while order > 0 and n_stars < needed(order):
        order -= 1
    return order


def fit_psf(
    image: NDArray[np.floating],
    variance: NDArray[np.floating],
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    flux: NDArray[np.float64],
    *,
    fwhm_px: float,
    bad: NDArray[np.bool_] | None = None,
    segmentation: NDArray[np.int32] | None = None,
    labels: NDArray[np.int64] | None = None,
    gain: float = 1.0,
    config: PsfConfig | None = None,
) -> PsfFit:
    """Fit a spatially varying :class:`~diaflow.image.PixelPsf` to the given stars.

    Parameters
    ----------
    image, variance
        Background-subtracted image (counts) and its variance (counts^2).
    x, y
        Star centroids, 0-based pixels.
    flux
        First guess of each star's flux (e.g. an aperture flux), counts.
    fwhm_px
        Approximate PSF FWHM, pixels; sets the stamp size.
    bad
        Pixels not to use (bad, saturated, cosmic rays, interpolated).
    segmentation, labels
        A segmentation map and each star's label in it: pixels of *other* sources (grown by two
        pixels) are not used.
    gain
        Electrons per count, for the photon noise of the model.
    config
        Polynomial order, stamp size, star limits and rejection.

    Returns
    -------
    PsfFit

    Raises
    ------
    CalibrationError
        ``too_few_stars`` if fewer than ``config.min_stars`` stars can be used.
    """
    config = config or PsfConfig()
    x, y, flux = (np.asarray(a, dtype=np.float64) for a in (x, y, flux))
    shape = (int(image.shape[0]), int(image.shape[1]))
    size = psf_stamp_size(fwhm_px, config)
    half = size // 2
    bad = np.zeros(shape, bool) if bad is None else bad
    # The core must be on the image; stamp pixels beyond the edge are simply masked.
    edge = max(2.0 * fwhm_px, 3.0)
    inside = (x >= edge) & (y >= edge) & (x <= shape[1] - 1 - edge) & (y <= shape[0] - 1 - edge)
    ok = inside & (flux > 0) & np.isfinite(x) & np.isfinite(y)
    if ok.sum() < config.min_stars:
        raise CalibrationError(
            "too_few_stars",
            f"PSF: {int(ok.sum())} usable stars (of {x.size} candidates); need at least "
            f"{config.min_stars} (is the field empty, or the image mostly masked?)",
            n_stars=int(ok.sum()),
            n_candidates=int(x.size),
        )
    stamps = _Stamps(image, variance, bad, segmentation, labels, x, y, half)
    u = 2 * x / max(shape[1] - 1, 1) - 1
    v = 2 * y / max(shape[0] - 1, 1) - 1
    f = flux.copy()
    chi2 = np.full(x.size, np.nan)
    r = np.hypot(*np.mgrid[-half : half + 1, -half : half + 1])
    core = r <= max(2.0 * fwhm_px, 3.0)
    outskirts = r > 1.5 * fwhm_px
    models: dict[int, NDArray[np.float64]] = {}
    coeffs = np.zeros((1, size, size))
    order = 0
    for _ in range(config.iterations + 1):
        idx = np.flatnonzero(ok)
        order = _order_for(idx.size, config)
        terms = poly_terms(u[idx], v[idx], order).T  # (n, K)
        data = np.empty((idx.size, size, size))
        weight = np.empty((idx.size, size, size))
        for j, k in enumerate(idx):
            d, b = stamps.data[k], stamps.bad[k]
            model = models.get(k)
            var = (
                _cut(variance, stamps.ix[k], stamps.iy[k], half, np.inf)
                if model is None
                else stamps.sky_var[k] + np.maximum(f[k] * model, 0.0) / gain
            )
            data[j] = d / f[k]
            weight[j] = np.where(b | ~np.isfinite(var) | (var <= 0), 0.0, f[k] ** 2 / var)
        if _use_pixels(idx.size, config):
            coeffs = solve_pixels(data, weight, terms)
        else:
            coeffs = solve_perturbation(data, weight, terms)
        coeffs = regularize_wings(coeffs, fwhm_px, config.wing_start_fwhm)
        # New models, PSF fluxes and chi-square of every candidate still inside.
        for k in np.flatnonzero(inside & np.isfinite(f) & (f > 0)):
            t = poly_terms(np.array(u[k]), np.array(v[k]), order)
            m = np.tensordot(t, coeffs, axes=1)
            models[k] = m / m.sum()
            d, b = stamps.data[k], stamps.bad[k]
            var = stamps.sky_var[k] + np.maximum(f[k] * models[k], 0.0) / gain
            w = np.where(b | ~(var > 0), 0.0, 1.0 / var)
            den = float((w * models[k] ** 2).sum())
            if den <= 0 or not np.isfinite(stamps.sky_var[k]):
                ok[k] = False
                continue
            f[k] = float((w * d * models[k]).sum()) / den
            res = d - f[k] * models[k]
            wc = np.where(b | ~(var > 0), 0.0, 1.0 / (var + (_MODEL_ERROR * f[k] * models[k]) ** 2))
            n_core = int((core & (wc > 0)).sum())
            chi2[k] = float((wc * res**2)[core].sum()) / max(n_core, 1) if n_core else np.nan
            # Light of a neighbour in the outskirts: mask its pixels (grown by one) from now on.
            hit = outskirts & (wc * res**2 > _CLIP_PIXEL_SIGMA**2)
            if hit.any():
                stamps.bad[k] |= ndimage.binary_dilation(hit)
        ok &= np.isfinite(chi2) & (f > 0)
        med = float(np.median(chi2[ok])) if ok.any() else np.nan
        spread = 1.4826 * float(np.median(np.abs(chi2[ok] - med))) if ok.any() else np.nan
        limit = max(med + config.clip_sigma * spread, 1.3 * med)
        ok &= chi2 <= limit
        if ok.sum() < config.min_stars:
            raise CalibrationError(
                "too_few_stars",
                f"PSF: only {int(ok.sum())} stars fit a common PSF (of {x.size} candidates); "
                f"need at least {config.min_stars}",
                n_stars=int(ok.sum()),
                n_candidates=int(x.size),
            )
    psf = PixelPsf(coeffs, order, shape)
    # Residual power over model power in the cores, summed over the stars: the bright stars,
    # whose noise is small, dominate it, so it measures the model's error.
    res_power = model_power = 0.0
    for k in np.flatnonzero(ok):
        good = core & ~stamps.bad[k]
        model_k = f[k] * models[k][good]
        res_power += float(((stamps.data[k][good] - model_k) ** 2).sum())
        model_power += float((model_k**2).sum())
    return PsfFit(
        psf=psf,
        used=ok,
        chi2=chi2,
        flux=np.where(inside, f, np.nan),
        residual_frac=math.sqrt(res_power / model_power) if model_power > 0 else math.nan,
        fwhm_px=psf.fwhm_px((shape[1] - 1) / 2, (shape[0] - 1) / 2),
    )


def psf_fluxes(
    image: NDArray[np.floating],
    variance: NDArray[np.floating],
    psf: PsfModel,
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    *,
    bad: NDArray[np.bool_] | None = None,
    segmentation: NDArray[np.int32] | None = None,
    labels: NDArray[np.int64] | None = None,
    gain: float = 1.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """PSF fluxes at fixed positions: the amplitude of the PSF model fitted by least squares.

    Weights are the sky variance plus the photon noise of the fitted model (two passes), so a
    bright source's noisy pixels do not bias its flux.

    Returns
    -------
    flux, flux_err : numpy.ndarray
        Counts, in the model's normalisation (stamp summing to 1); NaN where nothing is usable.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    bad = np.zeros(image.shape, bool) if bad is None else bad
    flux = np.full(x.size, np.nan)
    err = np.full(x.size, np.nan)
    for k in range(x.size):
        model = np.asarray(psf.image(float(x[k]), float(y[k])), dtype=np.float64)  # type: ignore[attr-defined]
        half = model.shape[0] // 2
        ix, iy = round(float(x[k])), round(float(y[k]))
        d = _cut(image, ix, iy, half, 0.0)
        b = _cut(bad, ix, iy, half, 1.0) > 0
        if segmentation is not None and labels is not None:
            s = _cut(segmentation, ix, iy, half, 0.0)
            foreign = (s != 0) & (s != labels[k])
            b |= ndimage.binary_dilation(foreign, iterations=2) if foreign.any() else foreign
        v = _cut(variance, ix, iy, half, np.nan)
        ring = np.hypot(*np.mgrid[-half : half + 1, -half : half + 1]) > half - 2
        sky = v[ring & ~b & np.isfinite(v)]
        if sky.size == 0:
            continue
        sky_var = float(np.median(sky))
        f = 0.0
        for _ in range(2):
            var = sky_var + np.maximum(f * model, 0.0) / gain
            w = np.where(b | ~(var > 0), 0.0, 1.0 / var)
            den = float((w * model**2).sum())
            if den <= 0:
                break
            f = float((w * d * model).sum()) / den
            flux[k], err[k] = f, 1.0 / math.sqrt(den)
    return flux, err
