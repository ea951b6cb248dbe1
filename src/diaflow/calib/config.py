"""Configuration of calibration: one frozen dataclass per step, nested in :class:`CalibConfig`.

Every field carries its unit in its name (``_px``, ``_arcsec``, ``_sigma``, ``_mag``) or says in its
docstring that it is a plain number. Each ``__post_init__`` checks its values and raises
:class:`~diaflow.errors.ConfigError` with the value received, so a bad configuration fails before
any pixel is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = [
    "AstrometryConfig",
    "BackgroundConfig",
    "CalibConfig",
    "CosmicRayConfig",
    "PhotometryConfig",
    "PsfConfig",
    "SourceConfig",
]


def _check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"{owner}.{name} must be > 0, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class BackgroundConfig:
    """How the sky background is modelled (a smooth mesh of robust local estimates)."""

    mesh_px: int = 128
    """Side of the mesh cells the local sky is estimated in; larger is smoother."""
    filter_cells: int = 3
    """Median filter over the mesh, in cells (odd); suppresses cells spoiled by big sources."""
    source_grow_px: int = 4
    """Pixels detected sources are grown by before the second, source-masked estimate."""
    detect_sigma: float = 3.0
    """Threshold (in local noise) of the quick detection that masks sources for the estimate."""

    def __post_init__(self) -> None:
        _check_positive("BackgroundConfig", mesh_px=self.mesh_px, detect_sigma=self.detect_sigma)
        if self.filter_cells < 1 or self.filter_cells % 2 == 0:
            raise ConfigError(
                f"BackgroundConfig.filter_cells must be odd and >= 1, got {self.filter_cells!r}"
            )
        if self.source_grow_px < 0:
            raise ConfigError(
                f"BackgroundConfig.source_grow_px must be >= 0, got {self.source_grow_px!r}"
            )


@dataclass(frozen=True, kw_only=True)
class CosmicRayConfig:
    """How cosmic rays are found: pixels sharper than any PSF allows (L.A.Cosmic's idea)."""

    threshold_sigma: float = 6.0
    """A seed pixel's excess over the mean of its eight neighbours, in units of its noise."""
    grow_sigma: float = 3.0
    """Threshold for pixels joined to a seed's track (neighbours of flagged pixels), in sigma."""
    sharpness_factor: float = 2.5
    """Safety factor on the sharpest excess the PSF allows; larger flags fewer star cores."""
    min_fwhm_px: float = 1.5
    """Smallest PSF FWHM trusted when judging sharpness (guards badly undersampled images)."""
    interp_sigma_px: float = 1.5
    """Gaussian width of the normalised-convolution interpolation over masked pixels."""
    interpolate_bad: bool = True
    """Also interpolate over BAD pixels (bad columns), setting INTRP; BAD stays set."""

    def __post_init__(self) -> None:
        _check_positive(
            "CosmicRayConfig",
            threshold_sigma=self.threshold_sigma,
            grow_sigma=self.grow_sigma,
            sharpness_factor=self.sharpness_factor,
            min_fwhm_px=self.min_fwhm_px,
            interp_sigma_px=self.interp_sigma_px,
        )


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """How the bright sources used by the PSF, astrometry and photometry steps are found."""

    threshold_sigma: float = 3.0
    """Detection threshold of each (unfiltered) pixel in units of its noise (variance plane)."""
    min_pixels: int = 5
    """Smallest connected footprint kept, pixels."""
    min_snr: float = 20.0
    """Sources with a lower aperture signal-to-noise ratio are not returned."""
    max_sources: int = 2000
    """At most this many sources (the brightest) are measured and returned."""
    star_size_tolerance: float = 0.1
    """A source is star-like when its size is within this fraction of the stellar locus."""

    def __post_init__(self) -> None:
        _check_positive(
            "SourceConfig",
            threshold_sigma=self.threshold_sigma,
            min_pixels=self.min_pixels,
            min_snr=self.min_snr,
            max_sources=self.max_sources,
            star_size_tolerance=self.star_size_tolerance,
        )


@dataclass(frozen=True, kw_only=True)
class PsfConfig:
    """How the spatially varying pixel PSF is fitted from stars (the PSFEx scheme)."""

    order: int = 2
    """Polynomial order of the stamp coefficients in detector position (lowered if few stars)."""
    variation: str = "auto"
    """How the stamp varies with position: ``"pixel"`` fits every pixel as a free polynomial
    (PSFEx; needs many stars), ``"perturbation"`` fits polynomial amounts of the mean stamp's
    dilation and two shears (works with a dozen stars), ``"auto"`` picks ``"pixel"`` from
    ``pixel_min_stars`` stars on."""
    pixel_min_stars: int = 100
    """Stars from which ``variation="auto"`` fits every pixel freely."""
    radius_fwhm: float = 5.0
    """Half-size of the PSF stamp in FWHMs; 5 keeps all but ~0.05 % of a Moffat(3.5) inside."""
    max_size_px: int = 71
    """Largest stamp side, pixels (odd)."""
    wing_start_fwhm: float = 2.5
    """Beyond this radius (in FWHMs) the model is a circular Moffat tail fitted to the azimuthal
    medians of the core (robust to neighbours); 0 keeps the fitted pixels everywhere."""
    min_stars: int = 5
    """Fewer usable stars than this is a ``too_few_stars`` calibration error."""
    stars_per_term: float = 3.0
    """Stars needed per polynomial term with free pixels; the order drops until this holds
    (the perturbation model needs only three stars more than terms)."""
    max_stars: int = 200
    """At most this many stars (the brightest good ones) enter the fit."""
    min_snr: float = 20.0
    """Smallest signal-to-noise ratio of a PSF star (faint stars still help: they are weighted
    by their own noise)."""
    clip_sigma: float = 4.0
    """Stars whose reduced chi-square is this many robust sigmas above the median are rejected."""
    iterations: int = 3
    """Fit-reject-recentre iterations."""

    def __post_init__(self) -> None:
        _check_positive(
            "PsfConfig",
            radius_fwhm=self.radius_fwhm,
            min_stars=self.min_stars,
            stars_per_term=self.stars_per_term,
            max_stars=self.max_stars,
            clip_sigma=self.clip_sigma,
            iterations=self.iterations,
        )
        if self.order < 0:
            raise ConfigError(f"PsfConfig.order must be >= 0, got {self.order!r}")
        if self.variation not in ("auto", "pixel", "perturbation"):
            raise ConfigError(
                "PsfConfig.variation must be 'auto', 'pixel' or 'perturbation', "
                f"got {self.variation!r}"
            )
        if self.max_size_px < 9 or self.max_size_px % 2 == 0:
            raise ConfigError(f"PsfConfig.max_size_px must be odd and >= 9, got {self.max_size_px}")


@dataclass(frozen=True, kw_only=True)
class AstrometryConfig:
    """How the WCS is fitted to the reference catalog."""

    max_offset_arcsec: float = 30.0
    """Largest pointing error searched for when matching (the header WCS's accuracy)."""
    match_radius_arcsec: float = 0.5
    """Final matching radius once the offset is known."""
    fit: str = "similarity"
    """``"similarity"`` (shift, rotation, scale: 4 parameters) or ``"affine"`` (6)."""
    clip_sigma: float = 3.0
    """Matches whose residual exceeds this many robust sigmas are rejected."""
    min_matches: int = 4
    """Fewer matches than this is a ``too_few_matches`` calibration error."""
    max_rms_mas: float = 200.0
    """A fit with a larger residual scatter is an ``astrometry_failed`` calibration error."""

    def __post_init__(self) -> None:
        _check_positive(
            "AstrometryConfig",
            max_offset_arcsec=self.max_offset_arcsec,
            match_radius_arcsec=self.match_radius_arcsec,
            clip_sigma=self.clip_sigma,
            max_rms_mas=self.max_rms_mas,
        )
        if self.fit not in ("similarity", "affine"):
            raise ConfigError(
                f"AstrometryConfig.fit must be 'similarity' or 'affine', got {self.fit!r}"
            )
        if self.min_matches < 3:
            raise ConfigError(f"AstrometryConfig.min_matches must be >= 3, got {self.min_matches}")


@dataclass(frozen=True, kw_only=True)
class PhotometryConfig:
    """How the zero point is measured from reference-catalog fluxes."""

    clip_sigma: float = 3.0
    """Stars this many robust sigmas from the weighted mean are rejected (iteratively)."""
    min_stars: int = 3
    """Fewer calibration stars than this is a ``too_few_calibration_stars`` error."""
    min_snr: float = 20.0
    """Smallest signal-to-noise ratio of a calibration star (image and catalog combined)."""
    use_variables: bool = False
    """Use stars the reference catalog marks variable (their catalog flux is a mean)."""

    def __post_init__(self) -> None:
        _check_positive(
            "PhotometryConfig",
            clip_sigma=self.clip_sigma,
            min_stars=self.min_stars,
            min_snr=self.min_snr,
        )


@dataclass(frozen=True, kw_only=True)
class CalibConfig:
    """Every calibration step's settings, plus the gates on the input pixels."""

    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    cosmic_rays: CosmicRayConfig = field(default_factory=CosmicRayConfig)
    sources: SourceConfig = field(default_factory=SourceConfig)
    psf: PsfConfig = field(default_factory=PsfConfig)
    astrometry: AstrometryConfig = field(default_factory=AstrometryConfig)
    photometry: PhotometryConfig = field(default_factory=PhotometryConfig)
    max_bad_fraction: float = 0.5
    """Calibration fails (``too_many_bad_pixels``) if more of the image than this is unusable
    (masked BAD/SAT/NO_DATA, or non-finite)."""

    def __post_init__(self) -> None:
        if not 0 < self.max_bad_fraction <= 1:
            raise ConfigError(
                f"CalibConfig.max_bad_fraction must be in (0, 1], got {self.max_bad_fraction!r}"
            )
