"""A night's visits, in time order, into the Level 1 database and out as alerts, exactly once.

Each visit-detector goes through four steps, each of which can be interrupted at any point:

1. **process** (:func:`~diaflow.nightly.prompt.prompt_visit`): pixels to rows and packets;
   reads the database, writes nothing there.
2. **store**: rows, the Visit row and the packets (an outbox) in one transaction.
3. **archive**: the outbox appended to the Alert archive (identical rows already there are
   skipped).
4. **send**: the packets to every sink (each sink skips what it already has), then the visit is
   marked ``alerted`` and its outbox dropped.

On a re-run, a visit marked ``alerted`` is skipped, one that is ``stored`` resumes at step 3
from its outbox (its packets are never rebuilt), and one that is absent starts again at step 1,
which is harmless because nothing of it was written. So a crash anywhere gives the same database
and neither a lost nor a duplicated alert.

Bad input is set aside with a reason and the night goes on: unreadable files, exposures that
cannot be calibrated or subtracted, visits without a template, and duplicates are quarantined
(Visit table and ``quarantine.jsonl``; the input file is left where it is). When the database
or a sink goes away, the visit is retried a few times, then deferred to the next run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits

from ..alerts import AlertSink, SinkConfig, make_sinks
from ..errors import BadInputError, DatabaseUnavailableError, DiaflowError
from ..image import read_exposure
from ..l1db import L1DbConfig, open_archive, open_l1db
from ..l1db.api import AlertArchive, L1Database, VisitRecord
from ..measure.measure import now_mjd_tai
from .prompt import PromptConfig, measure_visit, visit_products
from .repo import Repo

__all__ = ["NightConfig", "NightSummary", "VisitOutcome", "run_night"]

logger = logging.getLogger(__name__)

_CRASH_ENV = "DIAFLOW_CRASH_AT"
"""Fault injection for the exactly-once tests: ``<step>:<n>`` ends the process (exit 137, no
clean-up, like SIGKILL) the n-th time the runner reaches ``step`` (before_store, after_store,
after_archive, after_send)."""


@dataclass(frozen=True, kw_only=True)
class NightConfig:
    """How a night is run."""

    prompt: PromptConfig = field(default_factory=PromptConfig)
    l1db: L1DbConfig | None = None
    """The Level 1 database; None: SQLite files under the repo's ``l1db/``."""
    sinks: SinkConfig | None = None
    """Alert sinks; None: Avro files under the repo's ``alerts/``."""
    retries: int = 3
    """Attempts at storing or sending before a visit is deferred to the next run."""
    retry_wait_s: float = 1.0
    """Seconds before the first retry; doubled each time."""
    retry_quarantined: bool = False
    """Process visits quarantined by an earlier run again."""
    keep_days: float = 30.0
    """Difference images are kept this long for precovery."""


@dataclass
class VisitOutcome:
    """What became of one input file."""

    path: str
    visit: int
    detector: int
    mjd: float
    status: str
    """alerted | stored | skipped | quarantined | deferred"""
    reason: str = ""
    n_dia_sources: int = 0
    n_new_dia_objects: int = 0
    n_alerts: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    """Per stage, ``total`` (this run) and ``latency``: from the file appearing (its modification
    time, or the start of the run for files that were there before) to the alerts being
    written."""


@dataclass
class NightSummary:
    """The outcome of one run over a night's inputs."""

    label: str
    outcomes: list[VisitOutcome]
    seconds: float

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def totals(self) -> dict[str, Any]:
        done = [o for o in self.outcomes if o.status == "alerted"]
        totals = [o.seconds["total"] for o in done if "total" in o.seconds]
        latency = [o.seconds["latency"] for o in done if "latency" in o.seconds]
        return {
            "inputs": len(self.outcomes),
            "visits processed": len(done),
            "already done": self.count("skipped"),
            "quarantined": self.count("quarantined"),
            "deferred": self.count("deferred"),
            "DiaSources": sum(o.n_dia_sources for o in done),
            "new DiaObjects": sum(o.n_new_dia_objects for o in done),
            "alerts": sum(o.n_alerts for o in done),
            "seconds per visit (median)": float(np.median(totals)) if totals else float("nan"),
            "latency median (s)": float(np.median(latency)) if latency else float("nan"),
            "latency p98 (s)": float(np.percentile(latency, 98)) if latency else float("nan"),
            "wall time (s)": self.seconds,
        }

    def stage_medians(self) -> dict[str, float]:
        done = [o.seconds for o in self.outcomes if o.status == "alerted"]
        names = sorted({k for s in done for k in s})
        return {k: float(np.median([s[k] for s in done if k in s])) for k in names}

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "totals": self.totals(),
            "stages": self.stage_medians(),
            "outcomes": [asdict(o) for o in self.outcomes],
        }


class _Crash:
    def __init__(self) -> None:
        spec = os.environ.get(_CRASH_ENV, "")
        self.step, _, n = spec.partition(":")
        self.left = int(n or 1)

    def reached(self, step: str) -> None:
        if step == self.step:
            self.left -= 1
            if self.left <= 0:
                os._exit(137)


@dataclass
class _Input:
    path: Path
    visit: int
    detector: int
    mjd: float
    error: BadInputError | None = None


def _scan(path: Path) -> _Input:
    """Visit, detector and time from the primary header (cheap; used to order the night)."""
    try:
        hdr = fits.getheader(path, 0)
        return _Input(path, int(hdr["VISIT"]), int(hdr["DETECTOR"]), float(hdr["MJD-MID"]))
    except Exception as exc:  # any unreadable header is a bad input, whatever astropy raises
        stem = path.name.split(".")[0]
        visit, _, det = stem.partition("_")
        ok = visit.isdigit() and det.isdigit()
        return _Input(
            path,
            int(visit) if ok else -1,
            int(det) if ok else -1,
            float("nan"),
            BadInputError("unreadable_header", f"{path}: cannot read the FITS header ({exc})"),
        )


class _Night:
    """The state of one run: open connections, sinks, the crash hook."""

    def __init__(self, repo: Repo, refcat: pd.DataFrame, config: NightConfig) -> None:
        self.repo, self.refcat, self.config = repo, refcat, config
        self.db_config = config.l1db or L1DbConfig(path=repo.l1db_dir)
        self.sink_config = config.sinks or SinkConfig(avro_dir=repo.alerts_dir)
        self.db: L1Database = open_l1db(self.db_config)
        self.archive: AlertArchive = open_archive(self.db_config)
        self.sinks: AlertSink = make_sinks(self.sink_config)
        self.crash = _Crash()
        self.started = time.time()
        # files older than the run count as arriving when it started

    def close(self) -> None:
        for thing in (self.db, self.archive, self.sinks):
            if not hasattr(thing, "close"):
                continue
            try:
                thing.close()
            except Exception:  # closing a connection that went away must not hide the cause
                logger.debug("close failed", exc_info=True)

    def reopen(self) -> None:
        self.close()
        self.db = open_l1db(self.db_config)
        self.archive = open_archive(self.db_config)

    def retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        """Call ``fn``, reopening the database and retrying while it is unavailable."""
        wait = self.config.retry_wait_s
        for attempt in range(1, self.config.retries + 1):
            try:
                return fn()
            except DatabaseUnavailableError as exc:
                if attempt == self.config.retries:
                    raise
                logger.warning("%s: %s; retry %d in %.1f s", what, exc, attempt, wait)
                time.sleep(wait)
                wait *= 2
                try:
                    self.reopen()
                except DatabaseUnavailableError:
                    continue
        raise AssertionError("unreachable")

    def quarantine(self, item: _Input, exc: BadInputError) -> VisitOutcome:
        reason = f"{exc.reason}: {exc}"
        logger.warning("quarantined %s: %s", item.path, reason)
        self.repo.log_quarantine(
            {
                "path": str(item.path),
                "visit": item.visit,
                "detector": item.detector,
                "reason": exc.reason,
                "message": str(exc),
                "details": exc.details,
                "mjd_tai_recorded": now_mjd_tai(),
            }
        )
        if item.visit >= 0 and item.detector >= 0 and exc.reason != "duplicate_visit":
            record = VisitRecord(
                visit=item.visit,
                detector=item.detector,
                band="",
                midpointMjdTai=item.mjd,
                state="quarantined",
                reason=reason,
                source_path=str(item.path),
            )
            try:
                self.retrying("quarantine", lambda: self.db.quarantine_visit(record))
            except DiaflowError as exc:  # stored already, or the database is away: log only
                logger.error("quarantine of %s not recorded in the database: %s", item.path, exc)
        return VisitOutcome(
            str(item.path), item.visit, item.detector, item.mjd, "quarantined", reason
        )

    def finish(self, visit: int, detector: int) -> int:
        """Archive and send a stored visit's outbox, then mark it alerted; returns the count."""
        packets = self.retrying("outbox", lambda: self.db.outbox(visit, detector))
        self.retrying("archive", lambda: self.archive.append(packets))
        self.crash.reached("after_archive")
        self.sinks.send(visit, detector, packets)
        self.crash.reached("after_send")
        self.retrying("mark alerted", lambda: self.db.mark_alerted(visit, detector))
        return len(packets)

    def process(self, item: _Input) -> VisitOutcome:
        outcome = VisitOutcome(str(item.path), item.visit, item.detector, item.mjd, "")
        rec = self.retrying("visit", lambda: self.db.visit_record(item.visit, item.detector))
        if rec is not None and rec.state == "alerted":
            outcome.status, outcome.reason = "skipped", "already processed and alerted"
            return outcome
        if rec is not None and rec.state == "quarantined" and not self.config.retry_quarantined:
            outcome.status, outcome.reason = "skipped", f"quarantined earlier: {rec.reason}"
            return outcome
        t0 = time.perf_counter()
        if rec is None or rec.state == "quarantined":
            exposure = read_exposure(item.path)
            template = self.repo.template_for(
                exposure.info.band, exposure.info.boresight_ra_deg, exposure.info.boresight_dec_deg
            )
            measured = measure_visit(
                exposure,
                generation=self.db.generation_number,
                refcat=self.refcat,
                template=template,
                config=self.config.prompt,
            )
            result = self.retrying(
                "associate",
                lambda: visit_products(
                    measured,
                    db=self.db,
                    read_difference=self.repo.read_difference,
                    config=self.config.prompt,
                ),
            )
            result.seconds.update({k: v for k, v in measured.seconds.items() if k != "total"})
            result.products.record = dataclasses.replace(
                result.products.record, source_path=str(item.path)
            )
            self.repo.keep_difference(result.difference)
            self.crash.reached("before_store")
            store_start = time.perf_counter()
            self.retrying("store", lambda: self.db.store_visit(result.products))
            outcome.seconds.update(result.seconds)
            outcome.seconds.pop("total", None)
            outcome.seconds["store"] = time.perf_counter() - store_start
            self.crash.reached("after_store")
            rec = result.products.record
        send_start = time.perf_counter()
        outcome.n_alerts = self.finish(item.visit, item.detector)
        outcome.seconds["archive+send"] = time.perf_counter() - send_start
        outcome.seconds["total"] = time.perf_counter() - t0
        arrived = max(item.path.stat().st_mtime, self.started)
        outcome.seconds["latency"] = time.time() - arrived
        outcome.status = "alerted"
        outcome.n_dia_sources = rec.n_dia_sources
        outcome.n_new_dia_objects = rec.n_new_dia_objects
        return outcome


def _order(paths: Sequence[Path]) -> list[_Input]:
    items = [_scan(Path(p)) for p in paths]
    return sorted(items, key=lambda i: (np.isnan(i.mjd), i.mjd, i.visit, i.detector, str(i.path)))


def run_night(
    inputs: Sequence[str | os.PathLike[str]],
    repo: Repo,
    *,
    refcat: pd.DataFrame,
    config: NightConfig | None = None,
    label: str = "night",
    on_visit: Callable[[VisitOutcome], None] | None = None,
) -> NightSummary:
    """Process a night's exposure files in time order; see the module docstring.

    Safe to run again on the same inputs at any time: finished visits are skipped, interrupted
    ones are completed, and nothing is stored or alerted twice.
    """
    config = config or NightConfig()
    t0 = time.perf_counter()
    night = _Night(repo, refcat, config)
    outcomes: list[VisitOutcome] = []
    seen: dict[tuple[int, int], Path] = {}
    try:
        for item in _order([Path(p) for p in inputs]):
            key = (item.visit, item.detector)
            if item.error is not None:
                outcome = night.quarantine(item, item.error)
            elif key in seen:
                outcome = night.quarantine(
                    item,
                    BadInputError(
                        "duplicate_visit",
                        f"{item.path}: visit {item.visit} detector {item.detector} was already "
                        f"given in this night as {seen[key]}; kept the first",
                    ),
                )
            else:
                seen[key] = item.path
                try:
                    outcome = night.process(item)
                except BadInputError as exc:
                    outcome = night.quarantine(item, exc)
                except (DatabaseUnavailableError, ConnectionError, DiaflowError) as exc:
                    logger.error("deferred %s: %s", item.path, exc)
                    outcome = VisitOutcome(
                        str(item.path), item.visit, item.detector, item.mjd, "deferred", str(exc)
                    )
            outcomes.append(outcome)
            if on_visit is not None:
                on_visit(outcome)
        _prune(night, config)
    finally:
        night.close()
    summary = NightSummary(label, outcomes, time.perf_counter() - t0)
    repo.write_summary(label, summary.to_dict())
    return summary


def _prune(night: _Night, config: NightConfig) -> None:
    """Drop kept difference images older than ``keep_days`` before the night's last visit."""
    try:
        visits = night.db.visits()
    except DatabaseUnavailableError:
        return
    if visits.empty:
        return
    last = float(visits["midpointMjdTai"].max())
    keep = visits[visits["midpointMjdTai"] >= last - config.keep_days]
    night.repo.prune_differences(set(zip(keep["visit"], keep["detector"], strict=True)))
