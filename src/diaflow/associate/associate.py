"""The per-visit association step: SSObjects first, then DiaObjects, then new DiaObjects."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..errors import BadInputError
from .config import AssociationConfig
from .match import match_to_objects
from .schema import ASSOCIATION_ID_DTYPE, SS_SOURCE_COLUMNS, empty_dia_objects
from .ssobject import match_ss_objects
from .summary import SUMMARY_SOURCE_COLUMNS, summarize

__all__ = [
    "OBJECT_COLUMNS",
    "AssociationResult",
    "associate_visit",
    "passes_quality_cuts",
]

logger = logging.getLogger(__name__)

OBJECT_COLUMNS = ("diaObjectId", "ra", "dec", "raErr", "decErr")
"""DiaObject columns association needs (``ra_dec_Cov`` is used when present)."""

_QUALITY_COLUMNS = ("snr", "reliability")
_SOURCE_SUMMARY_COLUMNS = (*SUMMARY_SOURCE_COLUMNS, "ra_dec_Cov", "scienceFlux", "scienceFluxErr")
_FORCED_SUMMARY_COLUMNS = ("diaForcedSourceId", "diaObjectId", "band", "psfFlux", "psfFluxErr")


@dataclass(frozen=True)
class AssociationResult:
    """What association made of one visit's DiaSources."""

    dia_sources: pd.DataFrame
    """The input DiaSources, same rows and order, with ``diaObjectId`` and ``ssObjectId`` set
    (nullable ``Int64``; ``<NA>`` where not associated)."""
    dia_objects: pd.DataFrame
    """New versions of every DiaObject that received a DiaSource, new ones included, with every
    APDB DiaObject column, sorted by ``diaObjectId``."""
    new_object_ids: NDArray[np.int64]
    """Ids of the DiaObjects this visit started (each the id of its first DiaSource)."""
    ss_sources: pd.DataFrame
    """SSSource rows of the sources attributed to known SSObjects (every APDB column)."""
    unassociated_ids: NDArray[np.int64]
    """DiaSources that matched nothing and failed the cuts to start a DiaObject: stored with
    both ids unset, and no alert is sent for them."""

    @property
    def n_unassociated(self) -> int:
        """Number of unassociated DiaSources."""
        return len(self.unassociated_ids)

    @property
    def n_new(self) -> int:
        """Number of DiaObjects started by this visit."""
        return len(self.new_object_ids)


def passes_quality_cuts(
    dia_sources: pd.DataFrame, *, config: AssociationConfig | None = None
) -> NDArray[np.bool_]:
    """Which DiaSources may start a new DiaObject (the cuts of ``AssociationConfig``).

    Raises
    ------
    BadInputError
        ``associate_columns`` when a column a cut needs is missing.
    """
    cfg = config or AssociationConfig()
    _require(dia_sources, (*_QUALITY_COLUMNS, *cfg.reject_flags), "DiaSources")
    ok = np.abs(dia_sources["snr"].to_numpy(np.float64)) >= cfg.min_snr
    if cfg.min_reliability is not None:
        rel = dia_sources["reliability"].to_numpy(np.float64)
        if len(rel) and np.isnan(rel).all():
            logger.warning(
                "association: reliability is NaN for all %d DiaSource(s), so none can start a "
                "DiaObject (set AssociationConfig.min_reliability=None when no score is computed)",
                len(rel),
            )
        ok &= rel >= cfg.min_reliability
    for flag in cfg.reject_flags:
        ok &= ~dia_sources[flag].fillna(False).to_numpy(bool)
    ra, dec = dia_sources["ra"].to_numpy(np.float64), dia_sources["dec"].to_numpy(np.float64)
    return ok & np.isfinite(ra) & np.isfinite(dec)


def associate_visit(
    dia_sources: pd.DataFrame,
    dia_objects: pd.DataFrame,
    *,
    history_sources: pd.DataFrame,
    history_forced: pd.DataFrame | None,
    forced_sources: pd.DataFrame | None = None,
    ss_predictions: pd.DataFrame | None = None,
    midpoint_mjd: float,
    config: AssociationConfig | None = None,
) -> AssociationResult:
    """Associate one visit's DiaSources and summarise the DiaObjects they touch.

    Order of work: (1) attribute sources to predicted SSObject positions
    (:func:`~diaflow.associate.ssobject.match_ss_objects`); (2) match the rest one-to-one to the
    latest DiaObjects by chi-square (:func:`~diaflow.associate.match.match_to_objects`); (3)
    unmatched sources that pass :func:`passes_quality_cuts` start DiaObjects whose id is their
    ``diaSourceId``; the rest stay unassociated; (4) every DiaObject that received a source gets
    a new version (:func:`~diaflow.associate.summary.summarize`) over its history, this visit's
    sources and forced sources. Sources of SSObjects get no DiaObject (``diaObjectId`` NULL).

    Parameters
    ----------
    dia_sources
        This visit's DiaSources (``measure.DIA_SOURCE_COLUMNS``); ids must be unique.
    dia_objects
        Latest versions of the DiaObjects in the visit's region (``OBJECT_COLUMNS`` at least;
        the full APDB columns for the summaries' first/last times and counts).
    history_sources
        Earlier DiaSources of the region with ``diaObjectId`` (the history window).
    history_forced
        Earlier DiaForcedSources of the region, or None.
    forced_sources
        This visit's DiaForcedSources, if already measured.
    ss_predictions
        Predicted positions of known SSObjects at this visit (see
        ``ssobject.PREDICTION_COLUMNS``), or None.
    midpoint_mjd
        The visit's midpoint, MJD TAI: the validity start of the new versions.
    config
        Gates and cuts; defaults to ``AssociationConfig()``.

    Returns
    -------
    AssociationResult

    Raises
    ------
    BadInputError
        A missing column (``associate_columns``), repeated ``diaSourceId``
        (``associate_duplicate_sources``), a DiaObject given twice
        (``associate_duplicate_objects``), a non-finite midpoint (``associate_midpoint``).
    """
    start = time.perf_counter()
    cfg = config or AssociationConfig()
    _validate(dia_sources, dia_objects, history_sources, midpoint_mjd, cfg)
    n = len(dia_sources)
    obj_id = np.full(n, -1, np.int64)
    ss_id = np.full(n, -1, np.int64)

    ss_rows = pd.DataFrame({c: pd.Series(dtype=t) for c, t in SS_SOURCE_COLUMNS.items()})
    free = np.arange(n)
    if ss_predictions is not None and len(ss_predictions) and n:
        ss_match, ss_rows = match_ss_objects(dia_sources, ss_predictions, config=cfg)
        ss_id[ss_match.left] = ss_predictions["ssObjectId"].to_numpy(np.int64)[ss_match.right]
        free = np.flatnonzero(ss_id < 0)

    objects = dia_objects.reset_index(drop=True)
    m = match_to_objects(dia_sources.iloc[free], objects, config=cfg)
    matched_src = free[m.left]
    obj_id[matched_src] = objects["diaObjectId"].to_numpy(np.int64)[m.right]

    rest = free[obj_id[free] < 0]
    starts = passes_quality_cuts(dia_sources.iloc[rest], config=cfg)
    new_src = rest[starts]
    src_ids = dia_sources["diaSourceId"].to_numpy(np.int64)
    obj_id[new_src] = src_ids[new_src]
    unassociated = rest[~starts]

    out = dia_sources.copy()
    out["diaObjectId"] = pd.array(np.where(obj_id >= 0, obj_id, 0), dtype=ASSOCIATION_ID_DTYPE)
    out.loc[obj_id < 0, "diaObjectId"] = pd.NA
    out["ssObjectId"] = pd.array(np.where(ss_id >= 0, ss_id, 0), dtype=ASSOCIATION_ID_DTYPE)
    out.loc[ss_id < 0, "ssObjectId"] = pd.NA

    touched = np.unique(obj_id[obj_id >= 0])
    if len(touched):
        sources = _stack([history_sources, out], _SOURCE_SUMMARY_COLUMNS)
        forced = _stack([history_forced, forced_sources], _FORCED_SUMMARY_COLUMNS)
        versions = summarize(touched, sources, forced, midpoint_mjd, objects, config=cfg)
    else:
        versions = empty_dia_objects()
    logger.info(
        "associate visit=%s sources=%d ss=%d matched=%d new=%d unassociated=%d %.2fs",
        _visit_label(dia_sources),
        n,
        int((ss_id >= 0).sum()),
        len(matched_src),
        len(new_src),
        len(unassociated),
        time.perf_counter() - start,
    )
    return AssociationResult(
        dia_sources=out,
        dia_objects=versions,
        new_object_ids=np.sort(src_ids[new_src]),
        ss_sources=ss_rows,
        unassociated_ids=np.sort(src_ids[unassociated]),
    )


def _require(table: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in table]
    if missing:
        raise BadInputError(
            "associate_columns",
            f"association: {what} lack column(s) {missing}; expected APDB columns "
            "(measure.DIA_SOURCE_COLUMNS for DiaSources, associate.DIA_OBJECT_COLUMNS for "
            "DiaObjects)",
        )


def _validate(
    dia_sources: pd.DataFrame,
    dia_objects: pd.DataFrame,
    history_sources: pd.DataFrame,
    midpoint_mjd: float,
    cfg: AssociationConfig,
) -> None:
    _require(
        dia_sources,
        (*SUMMARY_SOURCE_COLUMNS[:1], *SUMMARY_SOURCE_COLUMNS[2:], *_QUALITY_COLUMNS),
        "DiaSources",
    )
    _require(dia_sources, cfg.reject_flags, "DiaSources")
    _require(dia_objects, OBJECT_COLUMNS, "DiaObjects")
    if len(history_sources):
        _require(history_sources, SUMMARY_SOURCE_COLUMNS, "history DiaSources")
    if not math.isfinite(midpoint_mjd):
        raise BadInputError(
            "associate_midpoint", f"association: midpoint_mjd must be finite, got {midpoint_mjd!r}"
        )
    dup = dia_sources["diaSourceId"].duplicated()
    if dup.any():
        raise BadInputError(
            "associate_duplicate_sources",
            f"association: diaSourceId(s) {dia_sources['diaSourceId'][dup].unique()[:5].tolist()} "
            "appear more than once in one visit; ids must be unique (l1db.ids.make_ids)",
        )
    dup = dia_objects["diaObjectId"].duplicated()
    if dup.any():
        raise BadInputError(
            "associate_duplicate_objects",
            f"association: diaObjectId(s) {dia_objects['diaObjectId'][dup].unique()[:5].tolist()} "
            "given more than once; pass only the latest version of each DiaObject",
        )
    bad = ~np.isfinite(dia_sources["ra"].to_numpy(float)) | ~np.isfinite(
        dia_sources["dec"].to_numpy(float)
    )
    if bad.any():
        logger.warning(
            "association: %d DiaSource(s) without a finite position stay unassociated "
            "(first ids %s)",
            int(bad.sum()),
            dia_sources["diaSourceId"][bad].head(5).tolist(),
        )


def _stack(tables: list[pd.DataFrame | None], needed: tuple[str, ...]) -> pd.DataFrame | None:
    """Rows of several tables, keeping the columns a summary uses (all tables must have them)."""
    present = [t for t in tables if t is not None and len(t)]
    if not present:
        return None
    keep = [c for c in needed if all(c in t for t in present)]
    data: dict[str, object] = {}
    for c in keep:
        if c == "diaObjectId":
            data[c] = pd.concat(
                [t[c].astype(ASSOCIATION_ID_DTYPE) for t in present], ignore_index=True
            )
        else:
            data[c] = np.concatenate([t[c].to_numpy() for t in present])
    return pd.DataFrame(data)


def _visit_label(dia_sources: pd.DataFrame) -> str:
    if len(dia_sources) and "visit" in dia_sources and "detector" in dia_sources:
        return f"{dia_sources['visit'].iloc[0]}/{dia_sources['detector'].iloc[0]}"
    return "?"
