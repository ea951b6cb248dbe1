"""Output tables of the association stage, with the Rubin APDB column names, types and units.

``DIA_OBJECT_COLUMNS`` and ``SS_SOURCE_COLUMNS`` list *every* column of the APDB (``apdb.yaml``)
DiaObject and SSSource tables, in the schema's order. Association sets two DiaSource columns,
``diaObjectId`` and ``ssObjectId``, as pandas nullable ``Int64``: ``<NA>`` is SQL NULL (a source
of an SSObject has no DiaObject; an unassociated source has neither).
"""

from __future__ import annotations

import pandas as pd

from ..measure.schema import empty_table

__all__ = [
    "ASSOCIATION_ID_DTYPE",
    "BANDS",
    "DIA_OBJECT_COLUMNS",
    "SS_SOURCE_COLUMNS",
    "empty_dia_objects",
]

BANDS = ("u", "g", "r", "i", "z", "y")
"""The bands that have DiaObject summary columns."""

ASSOCIATION_ID_DTYPE = "Int64"
"""Dtype of DiaSource ``diaObjectId``/``ssObjectId`` after association (nullable int64)."""

_F4, _F8, _I8, _I4, _I2, _S = "float32", "float64", "int64", "int32", "int16", "object"


def _dia_object_columns() -> dict[str, str]:
    cols = {
        "diaObjectId": _I8,
        "validityStartMjdTai": _F8,
        "validityEndMjdTai": _F8,
        "ra": _F8,
        "raErr": _F4,
        "dec": _F8,
        "decErr": _F4,
        "ra_dec_Cov": _F4,
    }
    for b in BANDS:
        cols |= {
            f"{b}_psfFluxMean": _F4,
            f"{b}_psfFluxMeanErr": _F4,
            f"{b}_psfFluxSigma": _F4,
            f"{b}_psfFluxNdata": _I4,
            f"{b}_fpFluxMean": _F4,
            f"{b}_fpFluxMeanErr": _F4,
        }
    for b in BANDS:
        cols |= {f"{b}_scienceFluxMean": _F4, f"{b}_scienceFluxMeanErr": _F4}
    for b in BANDS:
        cols |= {
            f"{b}_psfFluxMin": _F4,
            f"{b}_psfFluxMax": _F4,
            f"{b}_psfFluxMaxSlope": _F4,
            f"{b}_psfFluxErrMean": _F4,
        }
    cols |= {"firstDiaSourceMjdTai": _F8, "lastDiaSourceMjdTai": _F8, "nDiaSources": _I4}
    return cols


DIA_OBJECT_COLUMNS: dict[str, str] = _dia_object_columns()
"""All APDB DiaObject columns with numpy dtypes: positions in degrees (``raErr`` on the sky,
``ra_dec_Cov`` in deg²), fluxes nJy, ``psfFluxMaxSlope`` nJy/day, times MJD TAI."""

SS_SOURCE_COLUMNS: dict[str, str] = {
    "diaSourceId": _I8,
    "ssObjectId": _I8,
    "designation": _S,
    "eclLambda": _F8,
    "eclBeta": _F8,
    "galLon": _F8,
    "galLat": _F8,
    "elongation": _F4,
    "phaseAngle": _F4,
    "topoRange": _F4,
    "topoRangeRate": _F4,
    "helioRange": _F4,
    "helioRangeRate": _F4,
    "ephRa": _F8,
    "ephDec": _F8,
    "ephVmag": _F4,
    "ephRate": _F4,
    "ephRateRa": _F4,
    "ephRateDec": _F4,
    "ephOffset": _F4,
    "ephOffsetRa": _F8,
    "ephOffsetDec": _F8,
    "ephOffsetAlongTrack": _F4,
    "ephOffsetCrossTrack": _F4,
    "helio_x": _F4,
    "helio_y": _F4,
    "helio_z": _F4,
    "helio_vx": _F4,
    "helio_vy": _F4,
    "helio_vz": _F4,
    "helio_vtot": _F4,
    "topo_x": _F4,
    "topo_y": _F4,
    "topo_z": _F4,
    "topo_vx": _F4,
    "topo_vy": _F4,
    "topo_vz": _F4,
    "topo_vtot": _F4,
    "diaDistanceRank": _I2,
}
"""All APDB SSSource columns with numpy dtypes: angles in degrees, ``ephOffset*`` in arcsec,
rates deg/day, ranges AU, velocities km/s. Association fills the ids, designation, ecliptic and
galactic coordinates of the observed position, ``eph*`` and ``diaDistanceRank``; any other column
is copied from the predictions when they carry it, else NaN."""


def empty_dia_objects() -> pd.DataFrame:
    """A zero-row DiaObject table with every column at its dtype."""
    return empty_table(DIA_OBJECT_COLUMNS)
