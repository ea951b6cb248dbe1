"""How DiaSources are matched to SSObjects and DiaObjects, and which may start a DiaObject."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["AssociationConfig"]

DEFAULT_REJECT_FLAGS = (
    "pixelFlags_saturatedCenter",
    "pixelFlags_nodataCenter",
    "pixelFlags_offimage",
    "pixelFlags_edge",
    "pixelFlags_bad",
    "psfFlux_flag",
)


@dataclass(frozen=True, kw_only=True)
class AssociationConfig:
    """Gates and quality cuts of the association stage.

    Positions are compared on the tangent plane with the combined covariance of the source, of the
    object's mean position and of a systematic floor; a pair is a candidate when it lies within
    ``radius_arcsec`` *and* its chi-square is at most ``max_chi2``.
    """

    radius_arcsec: float = 1.0
    """Largest separation of a DiaSource from a DiaObject it may join. One arcsecond is Rubin's
    choice: a few seeing FWHM below the separation of distinct sources the pipeline resolves
    (~2″), far above the astrometric scatter of a 5σ detection (~0.1″)."""
    max_chi2: float = 20.0
    """Largest chi-square (2 degrees of freedom) of a DiaSource-DiaObject pair, and the cost of
    leaving a DiaSource unmatched. A true pair exceeds it with probability exp(-10) = 4.5e-5, so
    true matches are almost never refused, while faint sources are not pulled onto a neighbour
    0.5″-1″ away when their errors say it cannot be theirs."""
    systematic_error_arcsec: float = 0.05
    """1-σ error added in quadrature (per axis) to every pair: astrometric calibration and
    template registration residuals, so bright sources with tiny statistical errors still match."""
    missing_error_arcsec: float = 0.3
    """1-σ error per axis assumed where a source or an object has no finite positional error (a
    failed centroid): about that of a 5σ detection in 1″ seeing, on the generous side."""
    ss_radius_arcsec: float = 1.0
    """Smallest gate around a predicted SSObject position (for a well-known orbit)."""
    ss_n_sigma: float = 5.0
    """The gate around a prediction grows to this many times its 1-σ uncertainty (its larger
    axis) when that exceeds ``ss_radius_arcsec``."""
    ss_max_radius_arcsec: float = 10.0
    """The gate never exceeds this: beyond it, chance coincidences with unrelated sources become
    common, and linking (MOPS) is the better tool."""
    min_reliability: float | None = 0.5
    """Smallest real/bogus score for a source to start a DiaObject; None to skip the cut. At 0.5
    the shipped model keeps 99.3 % of real sources with 98.4 % purity (docs/measurement.md). A
    NaN score (not computed) does not pass."""
    min_snr: float = 5.0
    """Smallest ``snr`` (absolute detection significance) for a source to start a DiaObject: the
    detection threshold, so sources kept at a lower threshold do not start objects."""
    reject_flags: tuple[str, ...] = DEFAULT_REJECT_FLAGS
    """DiaSource flag columns that stop a source starting a DiaObject: saturated or no data at
    its centre, off the image, touching the edge or a bad pixel, failed PSF flux. Dipoles and
    negative sources are allowed. Flagged sources still join existing objects."""

    def __post_init__(self) -> None:
        positive = {
            "radius_arcsec": self.radius_arcsec,
            "max_chi2": self.max_chi2,
            "missing_error_arcsec": self.missing_error_arcsec,
            "ss_radius_arcsec": self.ss_radius_arcsec,
            "ss_n_sigma": self.ss_n_sigma,
            "ss_max_radius_arcsec": self.ss_max_radius_arcsec,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"AssociationConfig.{name} must be finite and > 0, got {value!r}")
        if not (math.isfinite(self.systematic_error_arcsec) and self.systematic_error_arcsec >= 0):
            raise ConfigError(
                "AssociationConfig.systematic_error_arcsec must be finite and >= 0, got "
                f"{self.systematic_error_arcsec!r}"
            )
        if self.ss_max_radius_arcsec < self.ss_radius_arcsec:
            raise ConfigError(
                f"AssociationConfig.ss_max_radius_arcsec ({self.ss_max_radius_arcsec!r}) must be "
                f">= ss_radius_arcsec ({self.ss_radius_arcsec!r})"
            )
        if self.min_reliability is not None and not 0 <= self.min_reliability <= 1:
            raise ConfigError(
                f"AssociationConfig.min_reliability must be in [0, 1] or None, got "
                f"{self.min_reliability!r}"
            )
        if not math.isfinite(self.min_snr):
            raise ConfigError(f"AssociationConfig.min_snr must be finite, got {self.min_snr!r}")
        if isinstance(self.reject_flags, str):
            raise ConfigError(
                "AssociationConfig.reject_flags must be a tuple of column names, got the string "
                f"{self.reject_flags!r} (write ({self.reject_flags!r},))"
            )
