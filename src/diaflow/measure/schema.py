"""Output tables of the measurement stage, with the Rubin APDB column names and units.

The DiaSource and DiaForcedSource tables carry exactly the APDB (``lsst-sdm-schemas``
``apdb.yaml``) names of the columns this stage computes; association columns (``diaObjectId``,
``ssObjectId``, ...) are left to the association stage. Fluxes are nJy, positions ICRS degrees,
times MJD (TAI), pixel positions 0-based with integers at pixel centres.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "DIA_FORCED_SOURCE_COLUMNS",
    "DIA_SOURCE_COLUMNS",
    "empty_table",
    "new_columns",
    "to_frame",
]

_F4, _F8, _I8, _I4, _I2, _B, _S = "float32", "float64", "int64", "int32", "int16", "bool", "object"

DIA_SOURCE_COLUMNS: dict[str, str] = {
    # Identity and visit.
    "diaSourceId": _I8,
    "visit": _I8,
    "detector": _I2,
    "band": _S,
    "midpointMjdTai": _F8,
    "exposureTime": _F4,
    "timeProcessedMjdTai": _F8,
    # Position.
    "ra": _F8,
    "dec": _F8,
    "raErr": _F4,
    "decErr": _F4,
    "ra_dec_Cov": _F4,
    "x": _F4,
    "y": _F4,
    "xErr": _F4,
    "yErr": _F4,
    "centroid_flag": _B,
    # Detection.
    "isNegative": _B,
    "snr": _F4,
    "bboxSize": _I4,
    # PSF photometry on the difference image.
    "psfFlux": _F4,
    "psfFluxErr": _F4,
    "psfLnL": _F4,
    "psfChi2": _F4,
    "psfNdata": _I4,
    "psfFlux_flag": _B,
    "psfFlux_flag_edge": _B,
    "psfFlux_flag_noGoodPixels": _B,
    # Aperture photometry on the difference image.
    "apFlux": _F4,
    "apFluxErr": _F4,
    "apFlux_flag": _B,
    "apFlux_flag_apertureTruncated": _B,
    # Trailed-source model.
    "trailFlux": _F4,
    "trailFluxErr": _F4,
    "trailRa": _F8,
    "trailRaErr": _F4,
    "trailDec": _F8,
    "trailDecErr": _F4,
    "trailLength": _F4,
    "trailLengthErr": _F4,
    "trailAngle": _F4,
    "trailAngleErr": _F4,
    "trailChi2": _F4,
    "trailNdata": _I4,
    "trail_flag": _B,
    "trail_flag_edge": _B,
    # Dipole model.
    "dipoleMeanFlux": _F4,
    "dipoleMeanFluxErr": _F4,
    "dipoleFluxDiff": _F4,
    "dipoleFluxDiffErr": _F4,
    "dipoleLength": _F4,
    "dipoleAngle": _F4,
    "dipoleChi2": _F4,
    "dipoleNdata": _I4,
    "dipoleFitAttempted": _B,
    "isDipole": _B,
    # Forced photometry on the science and template images.
    "scienceFlux": _F4,
    "scienceFluxErr": _F4,
    "forced_PsfFlux_flag": _B,
    "forced_PsfFlux_flag_edge": _B,
    "forced_PsfFlux_flag_noGoodPixels": _B,
    "templateFlux": _F4,
    "templateFluxErr": _F4,
    # Shape.
    "ixx": _F4,
    "iyy": _F4,
    "ixy": _F4,
    "ixxPSF": _F4,
    "iyyPSF": _F4,
    "ixyPSF": _F4,
    "shape_flag": _B,
    "shape_flag_no_pixels": _B,
    # Real/bogus.
    "reliability": _F4,
    "reliabilityVersion": _S,
    # Pixel flags: footprint and 3x3 centre.
    "pixelFlags": _B,
    "pixelFlags_bad": _B,
    "pixelFlags_cr": _B,
    "pixelFlags_crCenter": _B,
    "pixelFlags_edge": _B,
    "pixelFlags_interpolated": _B,
    "pixelFlags_interpolatedCenter": _B,
    "pixelFlags_nodata": _B,
    "pixelFlags_nodataCenter": _B,
    "pixelFlags_offimage": _B,
    "pixelFlags_saturated": _B,
    "pixelFlags_saturatedCenter": _B,
    "pixelFlags_streak": _B,
    "pixelFlags_streakCenter": _B,
    "pixelFlags_suspect": _B,
    "pixelFlags_suspectCenter": _B,
}
"""DiaSource columns this stage fills, in output order, with their numpy dtypes (APDB types:
``long`` int64, ``short`` int16, ``int`` int32, ``float`` float32, ``double`` float64)."""

DIA_FORCED_SOURCE_COLUMNS: dict[str, str] = {
    "diaForcedSourceId": _I8,
    "diaObjectId": _I8,
    "visit": _I8,
    "detector": _I2,
    "band": _S,
    "midpointMjdTai": _F8,
    "timeProcessedMjdTai": _F8,
    "ra": _F8,
    "dec": _F8,
    "psfFlux": _F4,
    "psfFluxErr": _F4,
    "scienceFlux": _F4,
    "scienceFluxErr": _F4,
}
"""DiaForcedSource columns, in output order, with their numpy dtypes."""


def _default(dtype: str) -> object:
    if dtype.startswith("float"):
        return np.nan
    if dtype == _B:
        return False
    if dtype == _S:
        return None
    return 0


def new_columns(columns: dict[str, str], n: int) -> dict[str, np.ndarray]:
    """Arrays of length ``n`` for every column, filled with NaN, False, 0 or None by dtype."""
    return {name: np.full(n, _default(dtype), dtype=dtype) for name, dtype in columns.items()}


def empty_table(columns: dict[str, str]) -> pd.DataFrame:
    """A zero-row table with every column of ``columns`` at its dtype."""
    return to_frame(new_columns(columns, 0), columns)


def to_frame(data: dict[str, np.ndarray], columns: dict[str, str]) -> pd.DataFrame:
    """DataFrame with the columns of ``columns`` in order, cast to their dtypes."""
    return pd.DataFrame(
        {name: np.asarray(data[name]).astype(dtype, copy=False) for name, dtype in columns.items()}
    )
