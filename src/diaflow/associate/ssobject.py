"""Attribution of DiaSources to known solar-system objects from their predicted positions.

Each prediction (an SSObject's ephemeris at the visit's midpoint) gets a gate: its 1-σ
uncertainty times ``ss_n_sigma``, at least ``ss_radius_arcsec`` and at most
``ss_max_radius_arcsec``. Within the gates, sources and predictions are paired one-to-one,
attributing as many sources as possible and, among those choices, the one of least total
chi-square (source + prediction covariance + systematic floor). Each attributed source gets an
SSSource row: the offset from the prediction, along and across the predicted motion when the
rates are known, and the source's rank by distance among the sources in that prediction's gate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.coordinates import BarycentricMeanEcliptic, SkyCoord
from numpy.typing import NDArray

from ..errors import BadInputError
from ..measure.schema import new_columns, to_frame
from ._sky import chi2, pairs_within, tangent_offsets
from .config import AssociationConfig
from .match import Matches, assign_one_to_one, table_covariance
from .schema import SS_SOURCE_COLUMNS

__all__ = [
    "PREDICTION_COLUMNS",
    "match_ss_objects",
    "prediction_gate_arcsec",
    "validate_predictions",
]

PREDICTION_COLUMNS = ("ssObjectId", "ra", "dec")
"""Columns every prediction table needs. Optional: ``designation``; the 1-σ uncertainty as
``raErr``/``decErr`` (degrees on the sky, as in APDB) or ``uncertainty_arcsec`` (circular;
neither: the prediction counts as exact); ``ephRateRa``/``ephRateDec`` (deg/day, RA with cos
dec) for along/cross-track offsets; and any other SSSource column (``ephVmag``, ``helioRange``,
``topoRange``, ``phaseAngle``, ``helio_x``, ...), copied to the SSSource rows."""

_COMPUTED = {
    "diaSourceId",
    "ssObjectId",
    "designation",
    "eclLambda",
    "eclBeta",
    "galLon",
    "galLat",
    "ephRa",
    "ephDec",
    "ephOffset",
    "ephOffsetRa",
    "ephOffsetDec",
    "ephOffsetAlongTrack",
    "ephOffsetCrossTrack",
    "diaDistanceRank",
}


def validate_predictions(predictions: pd.DataFrame) -> None:
    """Check a prediction table before matching; raise BadInputError saying what is wrong."""
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions]
    if missing:
        raise BadInputError(
            "ss_predictions_columns",
            f"SSObject predictions lack column(s) {missing}; need {list(PREDICTION_COLUMNS)} "
            "(positions in ICRS degrees at the visit midpoint)",
        )
    dup = predictions["ssObjectId"].duplicated()
    if dup.any():
        raise BadInputError(
            "ss_predictions_duplicate",
            f"SSObject predictions repeat ssObjectId(s) "
            f"{predictions['ssObjectId'][dup].unique()[:5].tolist()}; give one position per "
            "object at the visit midpoint",
        )


def _prediction_covariance(
    pred: pd.DataFrame,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    n = len(pred)
    if "raErr" in pred and "decErr" in pred:
        # Missing errors count as exact: the floor and the minimum gate still apply.
        return table_covariance(pred.fillna({"raErr": 0.0, "decErr": 0.0}), 0.0)
    if "uncertainty_arcsec" in pred:
        s = np.nan_to_num(pred["uncertainty_arcsec"].to_numpy(np.float64), nan=0.0)
        return s * s, s * s, np.zeros(n)
    return np.zeros(n), np.zeros(n), np.zeros(n)


def prediction_gate_arcsec(
    predictions: pd.DataFrame, *, config: AssociationConfig | None = None
) -> NDArray[np.float64]:
    """The search radius (arcsec) around each prediction: n-sigma, clipped to the config's range."""
    cfg = config or AssociationConfig()
    pxx, pyy, _ = _prediction_covariance(predictions)
    sigma = np.sqrt(np.maximum(pxx, pyy))
    return np.clip(cfg.ss_n_sigma * sigma, cfg.ss_radius_arcsec, cfg.ss_max_radius_arcsec)


def match_ss_objects(
    sources: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    config: AssociationConfig | None = None,
) -> tuple[Matches, pd.DataFrame]:
    """Attribute DiaSources to predicted SSObject positions, one-to-one.

    Parameters
    ----------
    sources
        DiaSources (``diaSourceId, ra, dec, raErr, decErr``; ``ra_dec_Cov`` optional).
    predictions
        One row per SSObject expected in the visit (see ``PREDICTION_COLUMNS``).
    config
        Gates and the systematic floor.

    Returns
    -------
    (Matches, pandas.DataFrame)
        Row positions of the attributed sources and predictions, and their SSSource rows (every
        APDB SSSource column, in the order of ``Matches.left``).
    """
    cfg = config or AssociationConfig()
    validate_predictions(predictions)
    pxx, pyy, pxy = _prediction_covariance(predictions)
    gate = prediction_gate_arcsec(predictions, config=cfg)
    s_ra, s_dec = sources["ra"].to_numpy(np.float64), sources["dec"].to_numpy(np.float64)
    p_ra, p_dec = predictions["ra"].to_numpy(np.float64), predictions["dec"].to_numpy(np.float64)
    ok_s = np.flatnonzero(np.isfinite(s_ra) & np.isfinite(s_dec))
    ok_p = np.flatnonzero(np.isfinite(p_ra) & np.isfinite(p_dec))
    radius = float(gate[ok_p].max()) if len(ok_p) else 0.0
    i, j = pairs_within(s_ra[ok_s], s_dec[ok_s], p_ra[ok_p], p_dec[ok_p], radius)
    i, j = ok_s[i], ok_p[j]
    dx, dy = tangent_offsets(s_ra[i], s_dec[i], p_ra[j], p_dec[j])
    sep = np.hypot(dx, dy)
    keep = sep <= gate[j]
    i, j, dx, dy, sep = i[keep], j[keep], dx[keep], dy[keep], sep[keep]
    sxx, syy, sxy = table_covariance(sources, cfg.missing_error_arcsec)
    floor = cfg.systematic_error_arcsec**2
    c2 = chi2(dx, dy, sxx[i] + pxx[j] + floor, syy[i] + pyy[j] + floor, sxy[i] + pxy[j])
    # Attribute as many sources as the gates allow; chi-square only breaks ties between choices.
    chosen = assign_one_to_one(i, j, c2, unmatched_cost=float(c2.sum()) + 1.0)
    rank = _distance_rank(j, sep)
    matches = Matches(i[chosen], j[chosen], c2[chosen], sep[chosen], len(i))
    rows = _ss_source_rows(sources, predictions, matches, dx[chosen], dy[chosen], rank[chosen])
    return matches, rows


def _distance_rank(pred: NDArray[np.int64], sep: NDArray[np.float64]) -> NDArray[np.int64]:
    """1-based rank of each candidate by separation among the candidates of its prediction."""
    order = np.lexsort((sep, pred))
    ranked = np.empty(len(pred), np.int64)
    sorted_pred = pred[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_pred)) + 1] if len(pred) else np.zeros(0, int)
    first = np.repeat(starts, np.diff(np.r_[starts, len(pred)]))
    ranked[order] = np.arange(len(pred)) - first + 1
    return ranked


def _ss_source_rows(
    sources: pd.DataFrame,
    predictions: pd.DataFrame,
    m: Matches,
    dx: NDArray[np.float64],
    dy: NDArray[np.float64],
    rank: NDArray[np.int64],
) -> pd.DataFrame:
    n = len(m.left)
    cols = new_columns(SS_SOURCE_COLUMNS, n)
    pred = predictions.iloc[m.right]
    ra = sources["ra"].to_numpy(np.float64)[m.left]
    dec = sources["dec"].to_numpy(np.float64)[m.left]
    for name in SS_SOURCE_COLUMNS.keys() - _COMPUTED:
        if name in pred:
            cols[name] = pred[name].to_numpy()
    cols["diaSourceId"] = sources["diaSourceId"].to_numpy(np.int64)[m.left]
    cols["ssObjectId"] = pred["ssObjectId"].to_numpy(np.int64)
    if "designation" in pred:
        cols["designation"] = pred["designation"].to_numpy(object)
    if n:
        sky = SkyCoord(ra=ra, dec=dec, unit="deg", frame="icrs")
        ecl = sky.transform_to(BarycentricMeanEcliptic())
        cols["eclLambda"], cols["eclBeta"] = ecl.lon.deg, ecl.lat.deg
        cols["galLon"], cols["galLat"] = sky.galactic.l.deg, sky.galactic.b.deg
    cols["ephRa"] = pred["ra"].to_numpy(np.float64)
    cols["ephDec"] = pred["dec"].to_numpy(np.float64)
    cols["ephOffsetRa"], cols["ephOffsetDec"], cols["ephOffset"] = dx, dy, np.hypot(dx, dy)
    if "ephRateRa" in pred and "ephRateDec" in pred:
        vr = pred["ephRateRa"].to_numpy(np.float64)
        vd = pred["ephRateDec"].to_numpy(np.float64)
        speed = np.hypot(vr, vd)
        with np.errstate(invalid="ignore", divide="ignore"):
            ur, ud = (
                np.where(speed > 0, vr / speed, np.nan),
                np.where(speed > 0, vd / speed, np.nan),
            )
        cols["ephOffsetAlongTrack"] = dx * ur + dy * ud
        # Positive to the left of the motion (north of an eastward track).
        cols["ephOffsetCrossTrack"] = -dx * ud + dy * ur
        if "ephRate" not in pred:
            cols["ephRate"] = speed
    cols["diaDistanceRank"] = rank
    return to_frame(cols, SS_SOURCE_COLUMNS)
