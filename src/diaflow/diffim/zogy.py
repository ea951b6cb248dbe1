"""ZOGY: the proper difference image of Zackay, Ofek & Gal-Yam (2016).

With new image ``N`` (science), reference ``R`` (template), their PSFs ``P_n``, ``P_r``, sky
variances ``s_n``, ``s_r`` and photometric scales ``F_n = 1``, ``F_r = kappa`` (template flux per
science flux), the difference

    D(f) = [F_r P_r(f) N(f) - F_n P_n(f) R(f)] / sqrt(s_n F_r^2 |P_r(f)|^2 + s_r F_n^2 |P_n(f)|^2)

has white noise and is the optimal statistic for finding new point sources; nothing is
deconvolved, whichever image is sharper. Here ``D`` is rescaled by its flux zero point so that it
is in science counts, and it is written as ``k_n * N - k_r * R`` with the two compact kernels
``k_n`` and ``k_r`` computed once from the PSFs at the detector centre (so, unlike the spatially
varying Alard–Lupton kernel, ZOGY here assumes PSFs that vary little over the detector). The
variance plane is propagated exactly through both, and the difference's PSF is ``k_n * P_n``.
The flux ratio ``kappa`` comes from the same kind of bright isolated stars that Alard–Lupton
fits, each image cross-convolved with the other's PSF; each image's median is removed first and
a robust polynomial of the sky (``kernel.background_order``) is fitted to the difference and
removed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft
import scipy.signal
from numpy.typing import NDArray

from ..errors import SubtractionError
from ..image.exposure import Exposure
from ..image.psf import poly_terms
from .config import SubtractConfig
from .fourier import fft_shape, inverse_rfft2, kernel_spectra, poly_map
from .masking import difference_mask, filter_reach, noise_ratio
from .psf import DifferencePsf
from .solution import scaled_position
from .stamps import find_kernel_stars
from .validate import PreparedPair

if TYPE_CHECKING:
    from ..timing import Stopwatch
    from .subtract import Subtraction

__all__ = ["zogy_kernels", "zogy_subtract"]

_REGULARISATION = 1e-10
"""Added to the squared denominator, relative to its peak, where both PSFs vanish."""


def _pad(stamp: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    pad = (size - stamp.shape[0]) // 2
    return np.pad(stamp, pad)


def zogy_kernels(
    psf_new: NDArray[np.float64],
    psf_ref: NDArray[np.float64],
    *,
    var_new: float,
    var_ref: float,
    flux_ratio: float,
    half_width_px: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The two kernels of the ZOGY difference ``k_n * N - k_r * R``, in science flux units.

    Parameters
    ----------
    psf_new, psf_ref
        Centred odd-square PSF stamps of the science and template images (each sums to 1).
    var_new, var_ref
        Sky variance per pixel of each image, in its own counts^2.
    flux_ratio
        Template counts per science count of the same source.
    half_width_px
        Half-width of the returned kernels.

    Returns
    -------
    k_n, k_r
        ``(2 half_width + 1)``-square kernels; ``k_n`` sums to 1 and ``k_r`` to ``1 / flux_ratio``,
        so static sources cancel and new ones keep their science flux.
    """
    size = max(psf_new.shape[0], psf_ref.shape[0])
    grid = int(scipy.fft.next_fast_len(4 * max(size, 2 * half_width_px + 1), real=True))
    grid += grid % 2

    def spectrum(stamp: NDArray[np.float64]) -> NDArray[np.complex128]:
        padded = np.zeros((grid, grid))
        m = stamp.shape[0]
        padded[:m, :m] = stamp / stamp.sum()
        return np.asarray(scipy.fft.rfft2(np.roll(padded, (-(m // 2), -(m // 2)), axis=(0, 1))))

    p_n, p_r = spectrum(psf_new), spectrum(psf_ref)
    k = flux_ratio
    denom2 = var_new * k**2 * np.abs(p_r) ** 2 + var_ref * np.abs(p_n) ** 2
    denom = np.sqrt(denom2 + _REGULARISATION * float(denom2.max()))
    # Flux zero point of D: F_D = F_r F_n / sqrt(s_n F_r^2 + s_r F_n^2); D / F_D: science units.
    zero_point = k / math.sqrt(var_new * k**2 + var_ref)
    c = grid // 2
    out = []
    for spec in (k * p_r / denom / zero_point, p_n / denom / zero_point):
        real = np.fft.fftshift(scipy.fft.irfft2(spec, s=(grid, grid)))
        out.append(
            real[
                c - half_width_px : c + half_width_px + 1, c - half_width_px : c + half_width_px + 1
            ]
        )
    k_n, k_r = out
    # Cropping loses a little of each kernel's weight; restore the sums that cancel static sources.
    return k_n / k_n.sum(), k_r / k_r.sum() / k


def _flux_ratio(
    template: NDArray[np.float32],
    science: NDArray[np.float32],
    psf_t: NDArray[np.float64],
    psf_s: NDArray[np.float64],
    xs: NDArray[np.intp],
    ys: NDArray[np.intp],
) -> float:
    """Template counts per science count, from stars cross-convolved to the same PSF.

    ``template * P_s`` and ``science * P_t`` share the PSF ``P_s * P_t``, so their ratio over a
    window does not depend on how much of either PSF the window holds; a constant per star
    absorbs the local background. The median over stars is returned.
    """
    half = psf_t.shape[0] // 2
    offs = np.arange(-2 * half, 2 * half + 1)
    rows, cols = (ys[:, None] + offs)[:, :, None], (xs[:, None] + offs)[:, None, :]
    t = scipy.signal.fftconvolve(
        template[rows, cols].astype(np.float64), psf_s[None], mode="valid", axes=(1, 2)
    ).reshape(len(xs), -1)
    s = scipy.signal.fftconvolve(
        science[rows, cols].astype(np.float64), psf_t[None], mode="valid", axes=(1, 2)
    ).reshape(len(xs), -1)
    t -= t.mean(axis=1, keepdims=True)
    s -= s.mean(axis=1, keepdims=True)
    ratios = np.sum(t * s, axis=1) / np.maximum(np.sum(s * s, axis=1), 1e-300)
    return float(np.median(ratios[np.isfinite(ratios)]))


def _plane_fit(
    image: NDArray[np.float32], mask: NDArray[np.int32], order: int, step: int = 8
) -> NDArray[np.float32]:
    """Robust polynomial (``order``) of the sky of a difference image, on every pixel."""
    sub = image[::step, ::step].astype(np.float64)
    good = mask[::step, ::step] == 0
    ys, xs = np.nonzero(good)
    values = sub[good]
    ny, nx = image.shape
    u, v = scaled_position(xs * step, ys * step, (ny, nx))
    design = poly_terms(u, v, order).T
    keep = np.ones(len(values), dtype=bool)
    coeffs = np.zeros(design.shape[1])
    for _ in range(3):
        coeffs, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        resid = values - design @ coeffs
        scale = 1.4826 * float(np.median(np.abs(resid[keep])))
        keep = np.abs(resid) < 3 * max(scale, 1e-12)
    return poly_map(coeffs, order, (ny, nx))


def zogy_subtract(pair: PreparedPair, config: SubtractConfig, clock: Stopwatch) -> Subtraction:
    """ZOGY subtraction of a prepared pair (see the module docstring)."""
    from .subtract import Subtraction, SubtractionQuality

    sci, tmpl = pair.science, pair.template
    science, template = sci.exposure, tmpl.exposure
    shape = science.shape
    cx, cy = (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0
    psf_n = science.psf.kernel(cx, cy)  # type: ignore[union-attr]
    psf_r = template.psf.kernel(cx, cy)  # type: ignore[union-attr]
    size = max(psf_n.shape[0], psf_r.shape[0])
    psf_n, psf_r = _pad(psf_n, size), _pad(psf_r, size)

    # Flux ratio from PSF photometry of bright isolated stars in both images.
    half = size // 2
    narrow, broad = (sci, tmpl) if sci.fwhm_px <= tmpl.fwhm_px else (tmpl, sci)
    stars = find_kernel_stars(
        narrow=narrow.image,
        narrow_var=narrow.variance,
        broad=broad.image,
        broad_var=broad.variance,
        bad=sci.bad | tmpl.bad,
        narrow_saturation=narrow.exposure.info.saturation_e,
        broad_saturation=broad.exposure.info.saturation_e,
        narrow_psf=narrow.exposure.psf,
        fit_half_px=half,
        kernel_half_px=half,
        config=config.stamps,
    )
    if len(stars.x) < config.stamps.min_stamps:
        raise SubtractionError(
            "too_few_stamps",
            f"{science.label}: {len(stars.x)} stars to measure the flux ratio, need at least "
            f"{config.stamps.min_stamps}; lower stamps.min_snr or stamps.min_stamps",
            n_stamps=len(stars.x),
            min_stamps=config.stamps.min_stamps,
        )
    kappa = _flux_ratio(tmpl.image, sci.image, psf_r, psf_n, stars.x, stars.y)
    clock.lap("stamps")

    k_n, k_r = zogy_kernels(
        psf_n,
        psf_r,
        var_new=sci.sky_var,
        var_ref=tmpl.sky_var,
        flux_ratio=kappa,
        half_width_px=half,
    )
    grid = fft_shape(shape)
    workers = config.fft_workers
    spectra = kernel_spectra(np.stack([k_n, k_r, k_n**2, k_r**2]), grid)
    n_med = float(np.median(sci.image[::8, ::8]))
    r_med = float(np.median(tmpl.image[::8, ::8]))
    d_hat = scipy.fft.rfft2(sci.image - np.float32(n_med), s=grid, workers=workers)
    d_hat *= spectra[0]
    r_hat = scipy.fft.rfft2(tmpl.image - np.float32(r_med), s=grid, workers=workers)
    r_hat *= spectra[1]
    d_hat -= r_hat
    image = inverse_rfft2(d_hat, grid, shape, workers)
    v_hat = scipy.fft.rfft2(sci.variance, s=grid, workers=workers)
    v_hat *= spectra[2]
    r_hat = scipy.fft.rfft2(tmpl.variance, s=grid, workers=workers)
    r_hat *= spectra[3]
    v_hat += r_hat
    del r_hat, d_hat
    variance = inverse_rfft2(v_hat, grid, shape, workers)
    clock.lap("apply")

    reach_n, reach_r = filter_reach(k_n), filter_reach(k_r * kappa)
    edge = max(reach_n, reach_r)
    mask = difference_mask(
        tmpl.mask,
        sci.mask,
        kernel_reach_px=reach_r + config.mask_grow_px,
        filter_reach_px=reach_n + config.mask_grow_px,
        edge_px=edge,
    )
    # What remains of the backgrounds is (B_s - n_med) - (B_t - r_med) / kappa: fit and remove.
    remaining = 0.0
    if config.kernel.background_order >= 0:
        background = _plane_fit(image, mask, config.kernel.background_order)
        remaining = float(background[shape[0] // 2, shape[1] // 2])
        image -= background
    image[:edge], image[-edge:], image[:, :edge], image[:, -edge:] = 0, 0, 0, 0
    clock.lap("mask")
    difference = Exposure(
        image=image,
        mask=mask,
        variance=variance,
        wcs=science.wcs,
        info=science.info,
        zero_point=science.zero_point,
        psf=DifferencePsf(base=science.psf, size=size, decorrelation=k_n),  # type: ignore[arg-type]
        extra={**science.extra, "DIFFMETH": "ZOGY", "DIFFCONV": "both"},
    )
    ratio = noise_ratio(difference, config.noise_sample_step_px)
    if config.rescale_variance and np.isfinite(ratio):
        difference.variance *= np.float32(ratio**2)
    chi2 = _stamp_chi2(difference, stars.x, stars.y, half)
    clock.lap("quality")
    return Subtraction(
        difference=difference,
        convolved="both",
        method="zogy",
        solution=None,
        decorrelation=k_n,
        stamps_xy=np.stack([stars.x, stars.y], axis=1),
        quality=SubtractionQuality(
            n_candidates=int(stars.n_peaks),
            n_stamps=len(stars.x),
            stamp_chi2_median=float(np.median(chi2)) if len(chi2) else float("nan"),
            stamp_chi2_mean=float(np.mean(chi2)) if len(chi2) else float("nan"),
            flux_ratio=kappa,
            background_offset=r_med / kappa - n_med - remaining,
            noise_ratio=ratio,
            seconds=clock.total,
            timings_s=dict(clock.laps),
        ),
    )


def _stamp_chi2(
    diff: Exposure, xs: NDArray[np.intp], ys: NDArray[np.intp], half: int
) -> NDArray[np.float64]:
    """Mean ``image^2 / variance`` about each star, for stars whose window is unmasked."""
    offs = np.arange(-half, half + 1)
    rows = (ys[:, None] + offs)[:, :, None]
    cols = (xs[:, None] + offs)[:, None, :]
    ok = ~(diff.mask[rows, cols] != 0).any(axis=(1, 2))
    img = diff.image[rows, cols][ok].astype(np.float64)
    var = diff.variance[rows, cols][ok].astype(np.float64)
    return np.asarray(np.mean(img**2 / var, axis=(1, 2)))
