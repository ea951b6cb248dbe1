"""Configuration of image subtraction: kernel basis, stamp selection, method and decorrelation.

Every field carries its unit in its name or docstring; ``__post_init__`` rejects values that cannot
work with a :class:`~diaflow.errors.ConfigError` naming the field, the value and a hint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from ..image.masks import MaskPlane

__all__ = ["KernelConfig", "StampConfig", "SubtractConfig"]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True, kw_only=True)
class KernelConfig:
    """The Alard–Lupton matching kernel: Gaussian basis, spatial variation, background."""

    basis_degrees: tuple[int, ...] = (6, 4, 2)
    """Polynomial degree multiplying each Gaussian, narrowest first (one entry per Gaussian)."""
    basis_sigma_ratio: float = 2.0
    """Width ratio between consecutive Gaussians of the basis."""
    basis_min_sigma_px: float = 0.7
    """Narrowest Gaussian allowed, pixels (also used when both PSFs are nearly equal)."""
    half_width_sigma: float = 3.5
    """Kernel half-width in units of the widest basis Gaussian's sigma (before clamping)."""
    min_half_width_px: int = 8
    """Smallest kernel half-width, pixels (the kernel is ``2 * half_width + 1`` pixels wide)."""
    max_half_width_px: int = 17
    """Largest kernel half-width, pixels."""
    spatial_order: int = 2
    """Order of the polynomial in detector position that modulates each basis coefficient."""
    background_order: int = 1
    """Order of the differential background polynomial fitted with the kernel (-1: none)."""
    power_penalty: float = 1.0
    """Weight of the penalty on kernel power (``sum K^2`` averaged over the detector), in units of
    the chi^2 that the extra noise it brings would cost; damps directions the stars hardly
    constrain (noise amplification at the detector corners). 0 disables it."""
    vary_normalisation: bool = False
    """Let the kernel sum (photometric scale) vary over the detector with ``spatial_order``;
    by default it is one constant, as the photometric scale of two exposures should be."""

    def __post_init__(self) -> None:
        _require(
            len(self.basis_degrees) >= 1 and all(d >= 0 for d in self.basis_degrees),
            f"kernel.basis_degrees must be one or more degrees >= 0, got {self.basis_degrees!r}",
        )
        _require(
            self.basis_sigma_ratio > 1.0,
            f"kernel.basis_sigma_ratio must be > 1, got {self.basis_sigma_ratio!r}",
        )
        _require(
            self.basis_min_sigma_px > 0,
            f"kernel.basis_min_sigma_px must be > 0, got {self.basis_min_sigma_px!r}",
        )
        _require(
            self.half_width_sigma > 0,
            f"kernel.half_width_sigma must be > 0, got {self.half_width_sigma!r}",
        )
        _require(
            2 <= self.min_half_width_px <= self.max_half_width_px,
            "kernel half-widths must satisfy 2 <= min_half_width_px <= max_half_width_px, got "
            f"{(self.min_half_width_px, self.max_half_width_px)!r}",
        )
        _require(
            0 <= self.spatial_order <= 4,
            f"kernel.spatial_order must be 0..4, got {self.spatial_order!r}",
        )
        _require(
            self.power_penalty >= 0 and math.isfinite(self.power_penalty),
            f"kernel.power_penalty must be >= 0, got {self.power_penalty!r}",
        )
        _require(
            -1 <= self.background_order <= 4,
            f"kernel.background_order must be -1 (none) .. 4, got {self.background_order!r}",
        )


@dataclass(frozen=True, kw_only=True)
class StampConfig:
    """How the stars that constrain the kernel are chosen and clipped."""

    min_snr: float = 20.0
    """Smallest peak signal-to-noise (peak pixel over its noise) of a kernel star."""
    max_peak_fraction: float = 0.6
    """Largest peak allowed, as a fraction of each exposure's saturation level."""
    max_stamps: int = 200
    """Most stamps used; the brightest suitable stars of each grid cell are taken."""
    min_stamps: int = 10
    """Fewest stamps left after clipping; fewer raise ``SubtractionError("too_few_stamps")``."""
    grid_cells: int = 4
    """The detector is split into ``grid_cells`` x ``grid_cells`` cells, each given an equal
    share of stamps, so the spatial variation is constrained everywhere."""
    min_compactness: float = 0.75
    """Kernel stars must have at least this fraction of the PSF's peak-to-core flux ratio in
    the narrower image (rejects galaxies and blends); 0 accepts every compact-or-not source."""
    clip_sigma: float = 3.0
    """Stamps whose chi^2 per pixel or kernel sum is an outlier by this many robust sigmas are
    rejected (variable stars, blends, cosmic rays)."""
    clip_iterations: int = 3
    """Rounds of fitting and clipping."""
    bad_mask_planes: tuple[str, ...] = ("BAD", "SAT", "INTRP", "CR", "EDGE", "NO_DATA", "SUSPECT")
    """Mask planes that disqualify a stamp and are not trusted in either image."""

    def __post_init__(self) -> None:
        _require(self.min_snr > 0, f"stamps.min_snr must be > 0, got {self.min_snr!r}")
        _require(
            0 < self.max_peak_fraction <= 1,
            f"stamps.max_peak_fraction must be in (0, 1], got {self.max_peak_fraction!r}",
        )
        _require(
            1 <= self.min_stamps <= self.max_stamps,
            "stamps must satisfy 1 <= min_stamps <= max_stamps, got "
            f"{(self.min_stamps, self.max_stamps)!r}",
        )
        _require(self.grid_cells >= 1, f"stamps.grid_cells must be >= 1, got {self.grid_cells!r}")
        _require(
            0 <= self.min_compactness < 1,
            f"stamps.min_compactness must be in [0, 1), got {self.min_compactness!r}",
        )
        _require(
            self.clip_sigma > 0 and math.isfinite(self.clip_sigma),
            f"stamps.clip_sigma must be > 0, got {self.clip_sigma!r}",
        )
        _require(
            self.clip_iterations >= 0,
            f"stamps.clip_iterations must be >= 0, got {self.clip_iterations!r}",
        )
        unknown = [p for p in self.bad_mask_planes if p not in MaskPlane.__members__]
        _require(
            not unknown,
            f"stamps.bad_mask_planes has unknown plane(s) {unknown!r}; "
            f"choose from {list(MaskPlane.__members__)}",
        )


@dataclass(frozen=True, kw_only=True)
class SubtractConfig:
    """Image subtraction of an aligned science/template pair."""

    method: Literal["al", "zogy"] = "al"
    """``"al"``: Alard–Lupton PSF matching plus noise decorrelation; ``"zogy"``: the proper
    difference image of Zackay, Ofek & Gal-Yam (2016), from the two PSF models."""
    convolve: Literal["auto", "template", "science"] = "auto"
    """Which image is convolved (AL only): ``"auto"`` picks the one with the narrower PSF."""
    decorrelate: bool = True
    """Whiten the difference image's noise (AL only; ZOGY's output is white by construction)."""
    template_noise_correlation: bool = True
    """Measure the pixel noise correlation of the (resampled) template on its blank sky and use
    it in the decorrelation filter and the variance plane (AL); ``False`` treats it as white."""
    kernel: KernelConfig = field(default_factory=KernelConfig)
    """Kernel basis, spatial variation and background (``background_order`` also sets the
    polynomial ZOGY removes from its difference)."""
    stamps: StampConfig = field(default_factory=StampConfig)
    """Kernel stars (ZOGY uses the same selection for its flux ratio)."""
    fft_workers: int = 1
    """Threads given to ``scipy.fft`` and BLAS during a subtraction; 1 keeps to one core (the
    nightly budget is per core, and threaded BLAS on many small products crawls on a busy
    machine)."""
    mask_grow_px: int = 1
    """Extra growth of the inputs' mask planes in the difference's mask, pixels (partly filled
    pixels at the ends of bleed trails, cosmic-ray halos)."""
    rescale_variance: bool = False
    """Scale the difference's variance plane so that its blank-sky noise ratio is 1 (for inputs
    whose variance planes are known to be off, e.g. templates with resampling-correlated noise);
    ``quality.noise_ratio`` reports the ratio before the scaling."""
    noise_sample_step_px: int = 8
    """Every this-many-th pixel (each axis) is used for the blank-sky noise figure (a smaller
    step on images too small to give 200 000 pixels)."""

    def __post_init__(self) -> None:
        _require(
            self.method in ("al", "zogy"), f"method must be 'al' or 'zogy', got {self.method!r}"
        )
        _require(
            self.convolve in ("auto", "template", "science"),
            f"convolve must be 'auto', 'template' or 'science', got {self.convolve!r}",
        )
        _require(self.fft_workers >= 1, f"fft_workers must be >= 1, got {self.fft_workers!r}")
        _require(self.mask_grow_px >= 0, f"mask_grow_px must be >= 0, got {self.mask_grow_px!r}")
        _require(
            self.noise_sample_step_px >= 1,
            f"noise_sample_step_px must be >= 1, got {self.noise_sample_step_px!r}",
        )
