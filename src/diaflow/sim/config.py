"""Configuration of a simulated survey: camera, cadence, sky content and rendering.

Every field says its unit in its name or docstring. :meth:`SurveyConfig.validate` checks the whole
configuration before anything is written, and raises :class:`~diaflow.errors.ConfigError` with the
offending value and a hint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = [
    "BANDS",
    "PRESETS",
    "CadenceConfig",
    "CameraConfig",
    "RenderConfig",
    "SkyConfig",
    "SurveyConfig",
    "preset",
]

BANDS = ("u", "g", "r", "i", "z", "y")
"""The survey's filter bands, in wavelength order."""


@dataclass(frozen=True, kw_only=True)
class CameraConfig:
    """The camera: detectors, their layout in the focal plane, and their defects."""

    detector_shape: tuple[int, int] = (2048, 2048)
    """(ny, nx) pixels of every detector."""
    n_detectors: int = 4
    """Detectors, laid out in a near-square grid about the boresight."""
    pixel_scale_arcsec: float = 0.2
    """Pixel scale at the boresight."""
    detector_gap_px: int = 60
    """Gap between neighbouring detectors, pixels."""
    pixel_size_um: float = 10.0
    """Physical pixel size (sets the cosmic-ray rate per pixel)."""
    read_noise_e: float = 9.0
    """Read noise per pixel, electrons."""
    full_well_e: float = 1.0e5
    """Charge a pixel holds before it bleeds along its column, electrons."""
    distortion_k_per_px2: float = 2.0e-12
    """Radial optical distortion ``r' = r (1 + k r^2)`` in focal-plane pixels."""
    n_bad_columns: int = 2
    """Bad columns per detector, the same on every visit (masked BAD, as ISR would)."""
    pointing_error_arcsec: float = 2.0
    """RMS per axis of the true pointing about the commanded one (header WCS is the commanded)."""
    rotation_error_arcsec: float = 10.0
    """RMS of the true sky rotation about the commanded one."""


@dataclass(frozen=True, kw_only=True)
class CadenceConfig:
    """When and where the survey looks."""

    start_mjd: float = 61100.0
    """First night's date (MJD TAI, any time of that day); 61100 is 2026-03-01."""
    n_nights: int = 30
    """Calendar nights simulated (some are lost to weather)."""
    field_ra_deg: float | None = None
    """First field centre, ICRS; ``None`` puts it on the ecliptic at opposition mid-survey."""
    field_dec_deg: float | None = None
    """First field centre, ICRS; ``None`` together with ``field_ra_deg``."""
    n_fields: int = 1
    """Fields laid out eastwards along the ecliptic, one field-of-view apart."""
    visits_per_night: int = 3
    """Visits of each field per clear night (>= 2 so tracklets can form)."""
    revisit_min_minutes: tuple[float, float] = (15.0, 90.0)
    """Range of the interval between consecutive visits of a field in one night."""
    bands: tuple[str, ...] = ("g", "r", "i", "z")
    """Bands the schedule draws from (one or two per field per night)."""
    exptime_s: float = 30.0
    """Exposure time of every visit."""
    weather_loss_fraction: float = 0.2
    """Fraction of nights lost to weather."""
    site_lon_deg: float = -70.7494
    """Observatory longitude, east positive (default Cerro Pachón)."""
    site_lat_deg: float = -30.2444
    """Observatory geodetic latitude."""
    site_height_m: float = 2650.0
    """Observatory height above the ellipsoid."""
    median_seeing_arcsec: float = 0.85
    """Median zenith seeing FWHM in r; visits span about 0.6-1.6 arcsec."""
    opsim_path: str | None = None
    """An OpSim/rubin_sim visit database to follow instead of the synthetic schedule
    (``"sorcha"`` picks the one-year Rubin baseline shipped in Sorcha's wheel)."""


@dataclass(frozen=True, kw_only=True)
class SkyConfig:
    """What is on the sky, as densities over the survey footprint."""

    star_density_per_arcmin2: float = 6.0
    """Stars with r between the magnitude limits (crowded fields: 100 or more)."""
    star_mag_range: tuple[float, float] = (14.0, 26.0)
    """r-band magnitude range of stars; the brightest saturate."""
    star_count_slope: float = 0.25
    """d log10 N / dm of the star counts."""
    galaxy_density_per_arcmin2: float = 25.0
    """Galaxies with r between the magnitude limits."""
    galaxy_mag_range: tuple[float, float] = (18.0, 25.5)
    """r-band magnitude range of galaxies."""
    rr_lyrae_fraction: float = 0.01
    """Fraction of stars that are RR Lyrae."""
    eclipsing_fraction: float = 0.02
    """Fraction of stars that are eclipsing binaries."""
    agn_fraction: float = 0.03
    """Fraction of galaxies with a varying (damped-random-walk) nucleus."""
    transients_per_deg2_per_day: float = 30.0
    """Rate of transients brighter than about 24 mag at peak (SN Ia-like and fast)."""
    fast_transient_fraction: float = 0.3
    """Fraction of transients that are fast (days) rather than SN Ia-like (weeks)."""
    hostless_fraction: float = 0.1
    """Fraction of transients without a host galaxy."""
    main_belt_per_deg2: float = 200.0
    """Main-belt asteroids (H in ``main_belt_h_range``) per square degree near the fields."""
    main_belt_h_range: tuple[float, float] = (14.0, 20.5)
    """Absolute magnitude range of main-belt asteroids."""
    neo_per_deg2: float = 4.0
    """Near-Earth objects per square degree near the fields."""
    neo_h_range: tuple[float, float] = (17.0, 23.0)
    """Absolute magnitude range of NEOs."""
    refcat_mag_limit: float = 20.5
    """Faintest star in the (Gaia-like) reference catalog, r mag."""


@dataclass(frozen=True, kw_only=True)
class RenderConfig:
    """How pixels are made."""

    psf_beta: float = 3.5
    """Moffat beta of the PSF."""
    psf_fwhm_radial_variation: float = 0.08
    """Fractional FWHM increase from boresight to the edge of the field of view."""
    psf_ellipticity_rms: float = 0.03
    """RMS of the PSF ellipticity pattern across the focal plane."""
    cosmic_rays_per_cm2_per_min: float = 6.0
    """Cosmic-ray hit rate."""
    satellite_probability: float = 0.1
    """Probability that a satellite trail crosses a detector in one visit."""
    sky_gradient_fraction: float = 0.02
    """Peak-to-peak linear sky gradient across a detector, as a fraction of the sky level."""
    zero_point_scatter_mag: float = 0.02
    """RMS of the true zero point about the airmass-and-cloud model."""
    stamp_max_px: int = 256
    """Largest postage stamp drawn for one source."""


@dataclass(frozen=True, kw_only=True)
class SurveyConfig:
    """A whole simulated survey; :func:`~diaflow.sim.simulate_survey` renders it."""

    seed: int = 42
    """Master seed: same seed and configuration, same bytes."""
    camera: CameraConfig = field(default_factory=CameraConfig)
    cadence: CadenceConfig = field(default_factory=CadenceConfig)
    sky: SkyConfig = field(default_factory=SkyConfig)
    render: RenderConfig = field(default_factory=RenderConfig)

    def validate(self) -> None:
        """Raise :class:`ConfigError` if the configuration cannot work; write nothing."""
        cam, cad, sky, ren = self.camera, self.cadence, self.sky, self.render
        _positive("camera.detector_shape", min(cam.detector_shape), hint="at least 64 x 64")
        if min(cam.detector_shape) < 64:
            raise ConfigError(
                f"camera.detector_shape must be at least 64 x 64, got {cam.detector_shape!r}"
            )
        _positive("camera.n_detectors", cam.n_detectors)
        _positive("camera.pixel_scale_arcsec", cam.pixel_scale_arcsec)
        _positive("camera.full_well_e", cam.full_well_e)
        _non_negative("camera.read_noise_e", cam.read_noise_e)
        _non_negative("camera.detector_gap_px", cam.detector_gap_px)
        if cam.n_bad_columns < 0 or cam.n_bad_columns > cam.detector_shape[1] // 4:
            raise ConfigError(
                f"camera.n_bad_columns must be 0..{cam.detector_shape[1] // 4}, "
                f"got {cam.n_bad_columns!r}"
            )
        if cad.exptime_s <= 0 or not math.isfinite(cad.exptime_s):
            raise ConfigError(
                f"cadence.exptime_s must be a positive number of seconds, got {cad.exptime_s!r}"
            )
        unknown = [b for b in cad.bands if b not in BANDS]
        if unknown or not cad.bands:
            raise ConfigError(
                f"cadence.bands has unknown band(s) {unknown!r}; choose from {''.join(BANDS)}"
            )
        _positive("cadence.n_nights", cad.n_nights)
        _positive("cadence.n_fields", cad.n_fields)
        lo, hi = cad.revisit_min_minutes
        if not 0 < lo <= hi:
            raise ConfigError(
                f"cadence.revisit_min_minutes must satisfy 0 < min <= max, got {(lo, hi)!r}"
            )
        if cad.visits_per_night < 1:
            raise ConfigError(
                f"cadence.visits_per_night must be >= 1, got {cad.visits_per_night!r}"
            )
        # A night offers about 8 hours; every field's visits must fit with their spacing.
        slot_min = cad.exptime_s / 60.0 + 0.5
        needed_min = (
            cad.visits_per_night - 1
        ) * lo + cad.n_fields * cad.visits_per_night * slot_min
        if needed_min > 8 * 60:
            raise ConfigError(
                f"impossible cadence: {cad.n_fields} field(s) x {cad.visits_per_night} visits "
                f"spaced >= {lo} min need {needed_min:.0f} min, more than an 8-hour night; "
                "lower visits_per_night, n_fields or the revisit interval"
            )
        if (cad.field_ra_deg is None) != (cad.field_dec_deg is None):
            raise ConfigError("cadence.field_ra_deg and field_dec_deg must be given together")
        if cad.field_dec_deg is not None and not -90 <= cad.field_dec_deg <= 90:
            raise ConfigError(
                f"cadence.field_dec_deg must be in [-90, 90], got {cad.field_dec_deg!r}"
            )
        if not 0 <= cad.weather_loss_fraction < 1:
            raise ConfigError(
                "cadence.weather_loss_fraction must be in [0, 1), "
                f"got {cad.weather_loss_fraction!r}"
            )
        _positive("cadence.median_seeing_arcsec", cad.median_seeing_arcsec)
        for name in (
            "star_density_per_arcmin2",
            "galaxy_density_per_arcmin2",
            "transients_per_deg2_per_day",
            "main_belt_per_deg2",
            "neo_per_deg2",
        ):
            _non_negative(f"sky.{name}", getattr(sky, name))
        for name in (
            "rr_lyrae_fraction",
            "eclipsing_fraction",
            "agn_fraction",
            "fast_transient_fraction",
            "hostless_fraction",
        ):
            value = getattr(sky, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"sky.{name} must be in [0, 1], got {value!r}")
        if sky.rr_lyrae_fraction + sky.eclipsing_fraction > 1:
            raise ConfigError("sky.rr_lyrae_fraction + sky.eclipsing_fraction must be <= 1")
        for name in ("star_mag_range", "galaxy_mag_range", "main_belt_h_range", "neo_h_range"):
            a, b = getattr(sky, name)
            if not a < b:
                raise ConfigError(
                    f"sky.{name} must be (bright, faint) with bright < faint, got {(a, b)!r}"
                )
        _positive("render.psf_beta", ren.psf_beta - 1.0, hint="beta must exceed 1")
        _non_negative("render.cosmic_rays_per_cm2_per_min", ren.cosmic_rays_per_cm2_per_min)
        if not 0 <= ren.satellite_probability <= 1:
            raise ConfigError(
                f"render.satellite_probability must be in [0, 1], got {ren.satellite_probability!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dictionary (tuples become lists), for JSON and TOML."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def config_hash(self) -> str:
        """Stable SHA-256 of the configuration, for provenance."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SurveyConfig:
        """Build from a nested dictionary; unknown keys are an error, missing keys keep defaults."""
        sections = {
            "camera": CameraConfig,
            "cadence": CadenceConfig,
            "sky": SkyConfig,
            "render": RenderConfig,
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                kwargs[key] = _build(sections[key], value, key)
            elif key == "seed":
                kwargs[key] = int(value)
            else:
                raise ConfigError(
                    f"unknown configuration section {key!r}; expected seed or {list(sections)}"
                )
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | Path) -> SurveyConfig:
        """Read a TOML file: ``seed`` and ``[camera]``, ``[cadence]``, ``[sky]``, ``[render]``."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> SurveyConfig:
        """Copy with dotted-path changes, e.g. ``replace(**{"cadence.n_nights": 3})``."""
        data = self.to_dict()
        for dotted, value in changes.items():
            section, _, name = dotted.rpartition(".")
            target = data[section] if section else data
            if name not in target:
                raise ConfigError(f"unknown configuration field {dotted!r}")
            target[name] = value
        return SurveyConfig.from_dict(data)


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"unknown field {section}.{key}; known fields: {', '.join(sorted(names))}"
            )
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def _positive(name: str, value: float, *, hint: str = "") -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be > 0, got {value!r}" + (f" ({hint})" if hint else ""))


def _non_negative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be >= 0, got {value!r}")


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "camera": {"detector_shape": (512, 512), "n_detectors": 2},
        "cadence": {"n_nights": 6, "bands": ("g", "r")},
        "sky": {"main_belt_per_deg2": 2000.0, "transients_per_deg2_per_day": 400.0},
    },
    "default": {},
    "stress": {
        "camera": {"n_detectors": 9},
        "cadence": {"n_nights": 120, "n_fields": 3},
        "sky": {"star_density_per_arcmin2": 40.0},
    },
}
"""Named sizes: ``quick`` (a laptop demo in seconds), ``default`` (minutes), ``stress`` (hours)."""


def preset(name: str, **changes: Any) -> SurveyConfig:
    """A named preset, optionally with dotted-path changes."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return (
        SurveyConfig.from_dict(PRESETS[name]).replace(**changes)
        if changes
        else SurveyConfig.from_dict(PRESETS[name])
    )
