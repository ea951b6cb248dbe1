"""One visit-detector from pixels to the rows and alerts the Level 1 database stores.

:func:`prompt_visit` runs the image stages (``nightly.visit``), then association, forced
photometry of the DiaObjects on the detector, precovery of the new DiaObjects on the kept
difference images of the previous 30 days, the DiaObject summaries and the alert packets.
It reads the database but writes nothing: the runner stores the returned
:class:`~diaflow.l1db.api.VisitProducts` in one transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import __version__
from ..alerts import AlertConfig, archived_alerts, build_alert_payloads
from ..associate import AssociationConfig, associate_visit, summarize
from ..coadd import Template
from ..image import Exposure, VisitInfo
from ..l1db.api import (
    DAYS_PER_YEAR,
    ArchivedAlert,
    L1Database,
    Provenance,
    Region,
    VisitProducts,
    VisitRecord,
)
from ..l1db.ids import make_ids
from ..measure import forced_photometry
from ..measure.measure import now_mjd_tai
from ..timing import Stopwatch
from .repo import footprint
from .visit import VisitConfig, VisitResult, process_visit

__all__ = ["PromptConfig", "PromptResult", "measure_visit", "prompt_visit", "visit_products"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PromptConfig:
    """Everything the prompt processing of one visit needs to know."""

    visit: VisitConfig = field(default_factory=VisitConfig)
    association: AssociationConfig = field(default_factory=AssociationConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    history_days: float = DAYS_PER_YEAR
    """DiaSource and DiaForcedSource history read for association, summaries and alerts."""
    forced_days: float = DAYS_PER_YEAR
    """DiaObjects detected within this many days get forced photometry on every visit."""
    precovery_days: float = 30.0
    """New DiaObjects are measured on the kept difference images of this many past days."""
    region_margin_arcsec: float = 5.0
    """Margin around the detector for the database reads (objects near the edge)."""
    issue_alerts: bool = True
    """False for reprocessing and catch-up: no packets are built."""
    ss_predictor: Callable[[VisitInfo, Region], pd.DataFrame] | None = None
    """Predicted positions of known SSObjects in a visit's cone (``ssObjectId``, ``ra``, ``dec``,
    uncertainty; see ``associate.match_ss_objects``); None: no attribution. The moving-object
    stage (``mops/``) provides it."""

    def config_hash(self) -> str:
        """A short stable hash of the whole configuration, for provenance (a predictor counts
        by its qualified name, not its address)."""
        predictor = self.ss_predictor
        named = dataclasses.replace(self, ss_predictor=None)
        text = repr(named) + (
            getattr(predictor, "__qualname__", repr(predictor)) if predictor else ""
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class PromptResult:
    """The products of one visit and where its time went."""

    products: VisitProducts
    difference: Exposure
    seconds: dict[str, float]


def _concat(*frames: pd.DataFrame) -> pd.DataFrame:
    """Row-wise concatenation that ignores empty frames (and so their missing dtypes)."""
    kept = [f for f in frames if len(f)]
    if not kept:
        return frames[0] if frames else pd.DataFrame()
    return kept[0] if len(kept) == 1 else pd.concat(kept, ignore_index=True)


def _inside(exposure: Exposure, ra: np.ndarray, dec: np.ndarray, edge: float = 0.0) -> np.ndarray:
    """Which sky positions fall on the exposure's pixels (at least ``edge`` px from the border)."""
    if len(ra) == 0:
        return np.zeros(0, bool)
    assert exposure.wcs is not None
    x, y = exposure.wcs.world_to_pixel_values(np.asarray(ra), np.asarray(dec))
    ny, nx = exposure.shape
    return (x >= edge - 0.5) & (x <= nx - 0.5 - edge) & (y >= edge - 0.5) & (y <= ny - 0.5 - edge)


def _forced(
    difference: Exposure,
    science: Exposure | None,
    objects: pd.DataFrame,
    ids: Callable[[int], np.ndarray],
    now: float,
) -> pd.DataFrame:
    return forced_photometry(
        difference,
        objects["ra"].to_numpy(),
        objects["dec"].to_numpy(),
        ids=objects["diaObjectId"].to_numpy(),
        science=science,
        make_ids=ids,
        time_processed_mjd_tai=now,
    )


def _precovery(
    db: L1Database,
    read_difference: Callable[[int, int], Exposure | None],
    new_objects: pd.DataFrame,
    *,
    mjd: float,
    days: float,
    ids: Callable[[int], np.ndarray],
    now: float,
) -> pd.DataFrame:
    """Forced photometry of new DiaObjects on the kept difference images of the past ``days``."""
    if new_objects.empty:
        return pd.DataFrame()
    visits = db.visits()
    past = visits[
        (visits["state"].isin(["stored", "alerted"]))
        & (visits["midpointMjdTai"] < mjd)
        & (visits["midpointMjdTai"] >= mjd - days)
    ].sort_values("midpointMjdTai")
    out = []
    for row in past.itertuples():
        diff = read_difference(int(row.visit), int(row.detector))
        if diff is None or diff.wcs is None:
            continue
        on = _inside(diff, new_objects["ra"].to_numpy(), new_objects["dec"].to_numpy())
        if on.any():
            out.append(_forced(diff, None, new_objects[on], ids, now))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def prompt_visit(
    exposure: Exposure,
    *,
    db: L1Database,
    refcat: pd.DataFrame,
    template: Template,
    read_difference: Callable[[int, int], Exposure | None],
    config: PromptConfig | None = None,
) -> PromptResult:
    """Process one visit-detector into the rows and alert packets of the Level 1 database:
    :func:`measure_visit`, then :func:`visit_products`.

    Raises
    ------
    BadInputError
        When the visit cannot be processed (the runner quarantines it).
    DatabaseUnavailableError
        When the database cannot be read (retry :func:`visit_products`).
    """
    cfg = config or PromptConfig()
    result = measure_visit(
        exposure, generation=db.generation_number, refcat=refcat, template=template, config=cfg
    )
    out = visit_products(result, db=db, read_difference=read_difference, config=cfg)
    image = {k: v for k, v in result.seconds.items() if k != "total"}
    out.seconds = {**image, **out.seconds, "total": result.seconds["total"] + out.seconds["total"]}
    return out


def measure_visit(
    exposure: Exposure,
    *,
    generation: int,
    refcat: pd.DataFrame,
    template: Template,
    config: PromptConfig | None = None,
) -> VisitResult:
    """The image stages, with DiaSource ids of the given generation (``l1db.ids``)."""
    cfg = config or PromptConfig()
    info = exposure.info
    return process_visit(
        exposure,
        refcat=refcat,
        template=template,
        config=cfg.visit,
        make_ids=lambda n: make_ids(generation, info.visit, info.detector, n),
    )


def visit_products(
    result: VisitResult,
    *,
    db: L1Database,
    read_difference: Callable[[int, int], Exposure | None],
    config: PromptConfig | None = None,
) -> PromptResult:
    """Association, forced photometry, precovery, summaries and alerts of a measured visit.

    Reads the database, writes nothing; cheap to repeat when the database went away.
    """
    cfg = config or PromptConfig()
    info = result.calibration.exposure.info
    gen = db.generation_number
    clock = Stopwatch()
    next_index = len(result.dia_sources)

    def ids(n: int) -> np.ndarray:
        nonlocal next_index
        out = make_ids(gen, info.visit, info.detector, n, first=next_index)
        next_index += n
        return out

    science, difference = result.calibration.exposure, result.subtraction.difference
    assert science.wcs is not None
    mjd = float(info.mjd_tai)
    now = now_mjd_tai()
    ra0, dec0, radius = footprint(science.wcs, science.shape, cfg.region_margin_arcsec)
    region = Region(ra0, dec0, radius)
    objects = db.dia_objects(region)
    history = db.dia_sources(region, mjd, days=cfg.history_days)
    history_forced = db.dia_forced_sources(region, mjd, days=cfg.history_days)
    clock.lap("read")

    predictions = cfg.ss_predictor(info, region) if cfg.ss_predictor is not None else None
    assoc = associate_visit(
        result.dia_sources,
        objects,
        history_sources=history,
        history_forced=history_forced,
        ss_predictions=predictions,
        midpoint_mjd=mjd,
        config=cfg.association,
    )
    clock.lap("associate")

    # Forced photometry of every DiaObject on the detector detected within forced_days,
    # including the ones this visit touched or created.
    current = _concat(
        objects[~objects["diaObjectId"].isin(assoc.dia_objects["diaObjectId"])], assoc.dia_objects
    )
    recent = current["lastDiaSourceMjdTai"] >= mjd - cfg.forced_days
    on = _inside(difference, current["ra"].to_numpy(), current["dec"].to_numpy())
    targets = current[recent.to_numpy() & on]
    forced = _forced(difference, science, targets, ids, now) if len(targets) else pd.DataFrame()
    clock.lap("forced")
    new = assoc.dia_objects[assoc.dia_objects["diaObjectId"].isin(assoc.new_object_ids)]
    precovered = _precovery(
        db, read_difference, new, mjd=mjd, days=cfg.precovery_days, ids=ids, now=now
    )
    clock.lap("precovery")
    this_forced = _concat(forced, precovered)
    touched = assoc.dia_objects["diaObjectId"].to_numpy()
    dia_objects = summarize(
        touched,
        sources=_concat(history, assoc.dia_sources),
        forced=_concat(history_forced, this_forced),
        midpoint_mjd=mjd,
        previous=objects,
    )
    clock.lap("summarize")

    alerts: list[ArchivedAlert] = []
    if cfg.issue_alerts:
        batch = build_alert_payloads(
            assoc.dia_sources,
            dia_objects=dia_objects,
            prv_dia_sources=history,
            prv_dia_forced_sources=_concat(history_forced, this_forced),
            science=science,
            template=result.template,
            difference=difference,
            ss_sources=assoc.ss_sources,
            config=cfg.alerts,
        )
        alerts = archived_alerts(
            batch,
            visit=info.visit,
            detector=info.detector,
            software_version=__version__,
            generation=db.generation_name,
            issued_mjd_tai=now,
        )
    clock.lap("alerts")

    record = VisitRecord(
        visit=info.visit,
        detector=info.detector,
        band=info.band,
        midpointMjdTai=mjd,
        state="stored",
        n_dia_sources=len(assoc.dia_sources),
        n_new_dia_objects=len(assoc.new_object_ids),
        n_alerts=len(alerts),
        provenance=Provenance(__version__, cfg.config_hash(), result.template_version),
    )
    products = VisitProducts(
        record=record,
        dia_sources=assoc.dia_sources,
        dia_objects=dia_objects,
        dia_forced_sources=this_forced,
        ss_sources=assoc.ss_sources,
        alerts=alerts,
    )
    return PromptResult(products, difference, clock.done())
