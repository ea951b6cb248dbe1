"""Configuration of detection and measurement on difference images."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..image import MaskPlane

__all__ = ["DetectConfig", "DiaSourceConfig", "MeasureConfig"]


def _check_planes(name: str, planes: tuple[str, ...]) -> None:
    unknown = [p for p in planes if p not in MaskPlane.__members__]
    if unknown:
        raise ConfigError(
            f"{name} names unknown mask planes {unknown!r}; known: {list(MaskPlane.__members__)}"
        )


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class DetectConfig:
    """How positive and negative sources are found on a difference image."""

    threshold_sigma: float = 5.0
    """Threshold on the matched-filter significance (PSF-correlated image over its noise), in
    sigma; pixels at or above ``+threshold_sigma`` or at or below ``-threshold_sigma`` form
    footprints."""
    min_pixels: int = 1
    """Smallest footprint kept, in pixels above threshold (1 keeps every excursion: the matched
    filter already integrates over the PSF)."""
    footprint_grow_psf_sigma: float = 1.0
    """Footprints grow by this many PSF sigmas (Gaussian-equivalent) before the DETECTED and
    DETECTED_NEGATIVE mask bits are set and before pixel flags are read from them."""
    ignore_planes: tuple[str, ...] = ("BAD", "SAT", "NO_DATA")
    """Mask planes whose pixels are left out of the matched filter (weight zero)."""
    deblend_min_contrast_sigma: float = 3.0
    """A second peak in a footprint becomes its own source only if the significance dips by at
    least this many sigma on the straight path to every brighter peak kept."""
    deblend_min_contrast_fraction: float = 0.2
    """... and by at least this fraction of the fainter peak's significance (keeps bright trails
    in one piece)."""
    deblend_min_separation_fwhm: float = 1.5
    """... and only if it lies at least this many PSF FWHM from every brighter peak kept (noise
    splits the elongated lobes of faint dipoles and trails into close peaks)."""
    max_peaks_per_footprint: int = 20
    """At most this many sources from one footprint (the brightest peaks), e.g. along a streak."""
    dipole_pair_radius_fwhm: float = 2.0
    """A positive and a negative peak closer than this many PSF FWHM are one dipole candidate."""
    dipole_partner_sigma: float = 3.0
    """A lone peak is also a dipole candidate if the opposite-sign significance within the pair
    radius reaches this many sigma (a lobe below the detection threshold)."""

    def __post_init__(self) -> None:
        _positive("threshold_sigma", self.threshold_sigma)
        if self.min_pixels < 1:
            raise ConfigError(f"min_pixels must be >= 1, got {self.min_pixels!r}")
        if self.footprint_grow_psf_sigma < 0:
            raise ConfigError(
                f"footprint_grow_psf_sigma must be >= 0, got {self.footprint_grow_psf_sigma!r}"
            )
        _check_planes("ignore_planes", self.ignore_planes)
        if self.deblend_min_contrast_sigma < 0 or not 0 <= self.deblend_min_contrast_fraction < 1:
            raise ConfigError(
                "deblend contrasts must be >= 0 (fraction < 1), got "
                f"{self.deblend_min_contrast_sigma!r}, {self.deblend_min_contrast_fraction!r}"
            )
        if self.deblend_min_separation_fwhm < 0:
            raise ConfigError(
                "deblend_min_separation_fwhm must be >= 0, got "
                f"{self.deblend_min_separation_fwhm!r}"
            )
        if self.max_peaks_per_footprint < 1:
            raise ConfigError(
                f"max_peaks_per_footprint must be >= 1, got {self.max_peaks_per_footprint!r}"
            )
        _positive("dipole_pair_radius_fwhm", self.dipole_pair_radius_fwhm)
        _positive("dipole_partner_sigma", self.dipole_partner_sigma)


@dataclass(frozen=True, kw_only=True)
class MeasureConfig:
    """How each detection (and each forced position) is measured."""

    psf_fit_radius_fwhm: float = 1.5
    """Pixels within this many PSF FWHM of the source enter the PSF fit (at least 3 px)."""
    centroid_max_shift_px: float = 2.0
    """The fitted centroid may move at most this far from the detection peak; beyond, the
    peak position is kept and ``centroid_flag`` is set."""
    centroid_max_iterations: int = 8
    """Gauss-Newton iterations of the PSF fit for position and flux."""
    aperture_radius_px: float = 12.0
    """Radius of the ``apFlux`` aperture (APDB: 12 pixels)."""
    fit_ignore_planes: tuple[str, ...] = ("BAD", "SAT", "NO_DATA")
    """Mask planes whose pixels get zero weight in every fit and aperture sum."""
    trail_min_length_px: float = 4.0
    """The trail model is fitted when the length estimated from second moments, sqrt(12 (major
    moment - PSF moment)), reaches this many pixels."""
    trail_min_elongation: float = 15.0
    """... and when ``snr * (major moment - PSF moment) / PSF moment`` reaches this value: the
    elongation is beyond what noise gives a point source (its 99th percentile is about 12)."""
    trail_max_stamp_px: int = 257
    """Largest side of the cut-out a trail is fitted on (longer trails are clipped)."""
    dipole_min_delta_chi2: float = 25.0
    """``isDipole`` needs the dipole model to beat one PSF on the same pixels by this much chi2."""
    dipole_min_flux_ratio: float = 0.3
    """``isDipole`` needs the fainter lobe to hold at least this fraction of the brighter's flux."""
    reliability: bool = True
    """Score each source with the packaged real/bogus model (else ``reliability`` is NaN)."""

    def __post_init__(self) -> None:
        _positive("psf_fit_radius_fwhm", self.psf_fit_radius_fwhm)
        _positive("centroid_max_shift_px", self.centroid_max_shift_px)
        if self.centroid_max_iterations < 1:
            raise ConfigError(
                f"centroid_max_iterations must be >= 1, got {self.centroid_max_iterations!r}"
            )
        _positive("aperture_radius_px", self.aperture_radius_px)
        _check_planes("fit_ignore_planes", self.fit_ignore_planes)
        _positive("trail_min_length_px", self.trail_min_length_px)
        if self.trail_min_elongation < 0:
            raise ConfigError(
                f"trail_min_elongation must be >= 0, got {self.trail_min_elongation!r}"
            )
        if self.trail_max_stamp_px < 15:
            raise ConfigError(f"trail_max_stamp_px must be >= 15, got {self.trail_max_stamp_px!r}")
        if self.dipole_min_delta_chi2 < 0 or not 0 <= self.dipole_min_flux_ratio <= 1:
            raise ConfigError(
                "dipole_min_delta_chi2 must be >= 0 and dipole_min_flux_ratio in [0, 1], got "
                f"{self.dipole_min_delta_chi2!r}, {self.dipole_min_flux_ratio!r}"
            )


@dataclass(frozen=True, kw_only=True)
class DiaSourceConfig:
    """Detection and measurement together (:func:`~diaflow.measure.detect_and_measure`)."""

    detect: DetectConfig = field(default_factory=DetectConfig)
    """How sources are found."""
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    """How they are measured."""
