"""What :func:`~diaflow.calib.calibrate` returns: the calibrated exposure and its quality."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..image import Exposure

__all__ = ["CalibrationQuality", "CalibrationResult"]


@dataclass(frozen=True, kw_only=True)
class CalibrationQuality:
    """Quality figures of one calibration, for the visit's record and for quarantine gates."""

    background_level: float
    """Median sky level that was subtracted, counts per pixel."""
    background_rms: float
    """Median sky noise, counts per pixel."""
    n_bad_pixels: int
    """Pixels masked BAD/SAT/NO_DATA or non-finite on input (non-finite ones are now BAD)."""
    n_cosmic_ray_pixels: int
    """Pixels masked CR (and interpolated)."""
    n_cosmic_rays: int
    """Connected groups of CR pixels."""
    n_sources: int
    """Sources above the detection and S/N thresholds."""
    psf_fwhm_px: float
    """FWHM of the PSF model at the detector centre, pixels."""
    psf_n_stars: int
    """Stars in the final PSF fit."""
    psf_order: int
    """Polynomial order of the PSF model's spatial variation."""
    psf_chi2: float
    """Median reduced chi-square of the PSF stars' cores (2 % model error allowed)."""
    psf_residual_frac: float
    """RMS residual over RMS model in the PSF stars' cores, summed over the stars (so the
    brightest dominate); noise included."""
    astrometry_n_matches: int
    """Reference stars in the final WCS fit."""
    astrometry_rms_mas: float
    """Per-axis RMS of the WCS fit residuals, mas."""
    astrometry_offset_arcsec: float
    """Shift of the fitted tangent point from the header's."""
    astrometry_rotation_arcsec: float
    """Rotation of the fitted WCS relative to the header's."""
    zero_point: float
    """Measured AB zero point of one count."""
    zero_point_err: float
    """Its standard error, mag."""
    zero_point_n_stars: int
    """Calibration stars used."""
    zero_point_rms_mag: float
    """Scatter of the calibration stars' zero points, mag."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall-clock time of each step and ``total``."""


@dataclass(frozen=True, kw_only=True)
class CalibrationResult:
    """A calibrated exposure with what calibration measured on the way."""

    exposure: Exposure
    """Background-subtracted image with cosmic rays (and bad columns) interpolated and masked,
    the fitted WCS, the PSF model and the zero point."""
    background: NDArray[np.float32]
    """The background model that was subtracted, counts per pixel."""
    stars: pd.DataFrame
    """Detected sources (:data:`~diaflow.calib.sources.SOURCE_COLUMNS`) plus ``ra``, ``dec``
    (fitted WCS, deg), ``ref_index`` (row of the reference catalog, -1 if none), ``psf_candidate``,
    ``psf_used``, ``astrometry_used``, ``photometry_used``, ``psf_flux``, ``psf_flux_err``
    (counts) and ``ref_flux`` (nJy, NaN if unmatched)."""
    quality: CalibrationQuality
