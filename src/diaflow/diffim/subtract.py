"""Subtract an aligned template from a science exposure: Alard–Lupton matching plus decorrelation.

The steps (Alard & Lupton 1998; Alard 2000; Reiss & Lupton 2016):

1. choose the image to convolve: the one with the narrower PSF (so the kernel only blurs);
2. find kernel stars and fit the spatially varying kernel and a differential background
   (:mod:`.stamps`, :mod:`.kernel`);
3. apply the kernel to the whole image as ``sum_p P_p(x, y) (K_p * X)``: one inverse FFT per
   spatial term, however many basis functions there are;
4. whiten the noise with the decorrelation filter (:mod:`.decorrelate`, which accounts for the
   template's resampling-correlated noise as measured on its blank sky), fused into the same
   Fourier products, and propagate the variance exactly through both convolutions;
5. express the difference in science flux units and with the sign ``science - template``.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..image.exposure import Exposure
from ..timing import Stopwatch
from .apply import apply_kernel
from .basis import alard_lupton_basis, basis_sigmas_px
from .config import SubtractConfig
from .decorrelate import (
    decorrelation_kernel,
    noise_correlation,
    source_mask,
    variance_factors,
)
from .fourier import poly_map
from .kernel import fit_kernel
from .masking import difference_mask, filter_reach, noise_ratio
from .psf import DifferencePsf
from .solution import KernelSolution
from .stamps import find_kernel_stars
from .validate import PreparedPair, prepare_pair

__all__ = ["Subtraction", "SubtractionQuality", "subtract"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SubtractionQuality:
    """Figures of merit of one subtraction."""

    n_candidates: int
    """Kernel stars found (AL) before clipping."""
    n_stamps: int
    """Kernel stars used in the final fit."""
    stamp_chi2_median: float
    """Median chi^2 per pixel of the used stamps under the final kernel (1 for a perfect fit)."""
    stamp_chi2_mean: float
    """Mean chi^2 per pixel of the used stamps."""
    flux_ratio: float
    """Template counts per science count of the same source, at the detector centre."""
    background_offset: float
    """Template background minus science background at the detector centre, in science counts
    (what the fitted differential background removed)."""
    noise_ratio: float
    """Robust standard deviation of ``difference / sqrt(variance)`` over unmasked pixels (1 when
    the variance plane describes the noise), before any ``rescale_variance``."""
    seconds: float
    """Wall time of the subtraction."""
    timings_s: dict[str, float] = field(default_factory=dict)
    """Wall time of each step (``prepare``, ``stamps``, ``fit``, ``apply``, ``mask``, ...)."""


@dataclass(frozen=True, kw_only=True)
class Subtraction:
    """A difference image and how it was made."""

    difference: Exposure
    """``science - template`` in science units: image, variance, OR-ed mask (detection planes
    cleared), the science WCS, visit info and zero point, and the difference PSF."""
    convolved: Literal["template", "science", "both"]
    """Which input the matching kernel convolved (AL); ``"both"`` for ZOGY."""
    method: Literal["al", "zogy"]
    """Which method made the difference."""
    solution: KernelSolution | None
    """The matching kernel and background (AL; ``None`` for ZOGY). It maps the convolved image
    onto the other: ``other ~ K * convolved + background``."""
    decorrelation: NDArray[np.float64] | None
    """The decorrelation filter applied (``None`` if not decorrelated)."""
    stamps_xy: NDArray[np.intp] = field(default_factory=lambda: np.zeros((0, 2), np.intp))
    """(n, 2) (x, y) of the kernel stars used."""
    quality: SubtractionQuality


def subtract(
    science: Exposure, template: Exposure, *, config: SubtractConfig | None = None
) -> Subtraction:
    """Difference of a science exposure and a template already resampled onto its pixel grid.

    Parameters
    ----------
    science
        Calibrated science exposure, background subtracted, with a PSF model.
    template
        Template on the same pixel grid (same shape, aligned), with a PSF model. Its photometric
        scale may differ: the kernel sum absorbs it.
    config
        Method and parameters; defaults to :class:`SubtractConfig()`.

    Returns
    -------
    Subtraction
        The difference exposure (science flux units, ``science - template``), the kernel solution
        and quality figures.

    Raises
    ------
    SubtractionError
        With ``reason`` ``shape_mismatch``, ``not_aligned``, ``no_psf``, ``no_good_pixels``,
        ``too_few_stamps`` or ``singular_fit``. Retrying with the same inputs gives the same
        error.
    """
    config = config or SubtractConfig()
    with _blas_threads(config.fft_workers):
        clock = Stopwatch()
        pair = prepare_pair(science, template, config)
        clock.lap("prepare")
        if config.method == "zogy":
            from .zogy import zogy_subtract

            return zogy_subtract(pair, config, clock)
        return _al_subtract(pair, config, clock)


def _blas_threads(n: int) -> AbstractContextManager[object]:
    """Limit BLAS to ``n`` threads: the fits are many small products, which a busy machine
    slows by orders of magnitude when BLAS spreads them over threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _al_subtract(pair: PreparedPair, config: SubtractConfig, clock: Stopwatch) -> Subtraction:
    kcfg, scfg = config.kernel, config.stamps
    science = pair.science.exposure
    if config.convolve == "auto":
        conv_template = pair.template.fwhm_px <= pair.science.fwhm_px
    else:
        conv_template = config.convolve == "template"
    convolved: Literal["template", "science"] = "template" if conv_template else "science"
    x, y = (pair.template, pair.science) if conv_template else (pair.science, pair.template)
    sigmas = basis_sigmas_px(
        x.fwhm_px,
        y.fwhm_px,
        len(kcfg.basis_degrees),
        kcfg.basis_sigma_ratio,
        kcfg.basis_min_sigma_px,
    )
    h = min(
        max(math.ceil(kcfg.half_width_sigma * sigmas[-1]), kcfg.min_half_width_px),
        kcfg.max_half_width_px,
    )
    basis = alard_lupton_basis(sigmas, kcfg.basis_degrees, h)
    stars = find_kernel_stars(
        narrow=x.image,
        narrow_var=x.variance,
        broad=y.image,
        broad_var=y.variance,
        bad=x.bad | y.bad,
        narrow_saturation=x.exposure.info.saturation_e,
        broad_saturation=y.exposure.info.saturation_e,
        narrow_psf=x.exposure.psf,
        fit_half_px=h,
        kernel_half_px=h,
        config=scfg,
    )
    clock.lap("stamps")
    solution, stats = fit_kernel(
        target=y.image,
        target_var=y.variance,
        convolved=x.image,
        convolved_var=x.variance,
        xs=stars.x,
        ys=stars.y,
        basis=basis,
        kernel_config=kcfg,
        stamp_config=scfg,
        label=science.label,
    )
    shape = science.shape
    cx, cy = (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0
    rho, t_scale = None, 1.0
    if config.template_noise_correlation:
        # Sources found on the science image: its noise is independent of the template's.
        t, sci = pair.template, pair.science
        rho, t_scale = noise_correlation(
            t.image, t.variance, ~t.bad, sources=source_mask(sci.image, sci.variance)
        )
    corr_x, corr_y = (rho, None) if conv_template else (None, rho)
    s_x, s_y = (t_scale, 1.0) if conv_template else (1.0, t_scale)
    centre_kernel = solution.kernel(cx, cy)
    phi = None
    if config.decorrelate:
        phi = decorrelation_kernel(
            centre_kernel,
            var_target=y.sky_var * s_y,
            var_convolved=x.sky_var * s_x,
            half_width_px=h,
            corr_target=corr_y,
            corr_convolved=corr_x,
        )
    g_y, g_x = variance_factors(phi, centre_kernel, corr_target=corr_y, corr_convolved=corr_x)
    g_y, g_x = g_y * s_y, g_x * s_x
    clock.lap("fit")
    image, variance = apply_kernel(
        target=y.image,
        target_var=y.variance if g_y == 1.0 else y.variance * np.float32(g_y),
        convolved=x.image,
        convolved_var=x.variance if g_x == 1.0 else x.variance * np.float32(g_x),
        solution=solution,
        phi=phi,
        workers=config.fft_workers,
    )
    kappa = float(solution.kernel_sum(cx, cy))
    background = float(solution.background(cx, cy))
    if not conv_template:
        # target = template: Z = T - K*S - b  ->  science - template = -Z / kappa.
        if kcfg.vary_normalisation:
            scale = poly_map(solution.coeffs[0], solution.spatial_order, shape)
            image /= -scale
            variance /= scale**2
        else:
            image *= np.float32(-1.0 / kappa)
            variance *= np.float32(1.0 / kappa**2)
    clock.lap("apply")

    phi_reach = filter_reach(phi) if phi is not None else 0
    edge = h + phi_reach
    mask = difference_mask(
        x.mask,
        y.mask,
        kernel_reach_px=edge + config.mask_grow_px,
        filter_reach_px=phi_reach + config.mask_grow_px,
        edge_px=edge,
    )
    image[:edge], image[-edge:], image[:, :edge], image[:, -edge:] = 0, 0, 0, 0
    clock.lap("mask")

    psf = DifferencePsf(
        base=science.psf,  # type: ignore[arg-type]
        size=_psf_side(science) + (0 if conv_template else 2 * h),
        solution=None if conv_template else solution,
        decorrelation=phi,
    )
    difference = Exposure(
        image=image,
        mask=mask,
        variance=variance,
        wcs=science.wcs,
        info=science.info,
        zero_point=science.zero_point,
        psf=psf,
        extra={**science.extra, "DIFFMETH": "AL", "DIFFCONV": convolved},
    )
    ratio = noise_ratio(difference, config.noise_sample_step_px)
    if config.rescale_variance and np.isfinite(ratio):
        difference.variance *= np.float32(ratio**2)
    clock.lap("quality")
    chi2 = stats.chi2_per_pixel
    quality = SubtractionQuality(
        n_candidates=stats.n_candidates,
        n_stamps=stats.n_used,
        stamp_chi2_median=float(np.median(chi2)),
        stamp_chi2_mean=float(np.mean(chi2)),
        # kappa and b map the convolved image onto the other: express both template-relative.
        flux_ratio=1.0 / kappa if conv_template else kappa,
        background_offset=-background if conv_template else background / kappa,
        noise_ratio=ratio,
        seconds=clock.total,
        timings_s=dict(clock.laps),
    )
    logger.info(
        "diffim visit=%s kernel=AL convolved=%s stamps=%d/%d chi2=%.2f noise=%.3f %.2fs",
        f"{science.info.visit}/{science.info.detector}",
        convolved,
        stats.n_used,
        stats.n_candidates,
        quality.stamp_chi2_median,
        ratio,
        quality.seconds,
    )
    return Subtraction(
        difference=difference,
        convolved=convolved,
        method="al",
        solution=solution,
        decorrelation=phi,
        stamps_xy=np.stack([stars.x[stats.used], stars.y[stats.used]], axis=1),
        quality=quality,
    )


def _psf_side(exposure: Exposure) -> int:
    shape = exposure.shape
    return int(exposure.psf.kernel((shape[1] - 1) / 2, (shape[0] - 1) / 2).shape[0])  # type: ignore[union-attr]
