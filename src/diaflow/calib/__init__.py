"""Calibration of one exposure: background, cosmic rays, PSF model, WCS and zero point.

:func:`calibrate` runs every step on an :class:`~diaflow.image.Exposure` and a reference catalog;
each step is also usable alone on arrays (:func:`estimate_background`, :func:`find_cosmic_rays`,
:func:`interpolate_masked`, :func:`detect_sources`, :func:`fit_psf`, :func:`psf_fluxes`,
:func:`fit_wcs`, :func:`fit_zero_point`). See ``docs/calibration.md``.
"""

from .astrometry import AstrometryFit, fit_wcs, refcat_at_epoch
from .background import Background, estimate_background
from .calibrate import calibrate
from .config import (
    AstrometryConfig,
    BackgroundConfig,
    CalibConfig,
    CosmicRayConfig,
    PhotometryConfig,
    PsfConfig,
    SourceConfig,
)
from .cosmic import find_cosmic_rays, interpolate_masked, psf_sharpness
from .internal import internal_refcat
from .photometry import ZeroPointFit, fit_zero_point
from .psf import PsfFit, fit_psf, psf_fluxes, psf_stamp_size
from .result import CalibrationQuality, CalibrationResult
from .sources import SOURCE_COLUMNS, detect_sources, flag_near_masked, stellar_locus
from .validate import CheckedInputs, footprint_refcat, validate_inputs

__all__ = [
    "SOURCE_COLUMNS",
    "AstrometryConfig",
    "AstrometryFit",
    "Background",
    "BackgroundConfig",
    "CalibConfig",
    "CalibrationQuality",
    "CalibrationResult",
    "CheckedInputs",
    "CosmicRayConfig",
    "PhotometryConfig",
    "PsfConfig",
    "PsfFit",
    "SourceConfig",
    "ZeroPointFit",
    "calibrate",
    "detect_sources",
    "estimate_background",
    "find_cosmic_rays",
    "fit_psf",
    "fit_wcs",
    "fit_zero_point",
    "flag_near_masked",
    "footprint_refcat",
    "internal_refcat",
    "interpolate_masked",
    "psf_fluxes",
    "psf_sharpness",
    "psf_stamp_size",
    "refcat_at_epoch",
    "stellar_locus",
    "validate_inputs",
]
