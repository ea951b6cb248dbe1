"""The Level 1 database interface that every backend implements, and the records it exchanges.

Tables are pandas DataFrames whose columns carry the Rubin APDB names, types and units
(``l1db.schema``). One :class:`L1Database` object is one *generation* of the Level 1 database
(e.g. ``L1-0``, then ``DR1-L1`` after the first release); the :class:`AlertArchive` lives
outside every generation and only ever grows.

Exactly-once processing rests on three calls. :meth:`L1Database.store_visit` writes everything a
visit produced, its Visit row and its alert packets (an *outbox*) in one transaction, or
nothing. The runner then appends the outbox to the archive (:meth:`AlertArchive.append`, which
skips identical rows already there), sends the packets to the sinks, and calls
:meth:`L1Database.mark_alerted`. A crash anywhere in between is repaired by doing the remaining
steps again from the outbox: packets are never rebuilt after they were stored.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "AlertArchive",
    "ArchivedAlert",
    "L1Database",
    "Provenance",
    "Region",
    "VisitProducts",
    "VisitRecord",
    "VisitState",
]

VisitState = Literal["stored", "alerted", "quarantined"]
"""``stored``: products committed, alerts still in the outbox; ``alerted``: alerts archived and
sent; ``quarantined``: not processed, with a reason (the input is kept where it was)."""

DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class Region:
    """A cone on the sky (ICRS degrees): the footprint of a detector, grown by a margin."""

    ra: float
    dec: float
    radius: float

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Which positions (degrees) lie in the cone."""
        r0, d0 = np.deg2rad(self.ra), np.deg2rad(self.dec)
        r, d = np.deg2rad(np.asarray(ra, float)), np.deg2rad(np.asarray(dec, float))
        cos_sep = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(r - r0)
        return cos_sep >= np.cos(np.deg2rad(self.radius))


@dataclass(frozen=True)
class Provenance:
    """What produced a visit's rows: software, configuration and template."""

    software_version: str
    config_hash: str
    template_version: str


@dataclass(frozen=True)
class VisitRecord:
    """One row of the Visit table: a visit-detector's processing state."""

    visit: int
    detector: int
    band: str
    midpointMjdTai: float
    state: VisitState
    reason: str = ""
    """Why a visit was quarantined (a ``BadInputError.reason`` plus its message)."""
    n_dia_sources: int = 0
    n_new_dia_objects: int = 0
    n_alerts: int = 0
    provenance: Provenance | None = None
    source_path: str = ""
    """The input file, so a quarantined visit can be found and retried."""


@dataclass(frozen=True)
class ArchivedAlert:
    """One alert packet as the archive keeps it."""

    diaSourceId: int
    visit: int
    detector: int
    payload: bytes
    """The Confluent wire-format packet: magic byte, 4-byte schema id, Avro body."""
    schema_id: int
    """major * 100 + minor of the Rubin alert schema."""
    software_version: str
    generation: str
    """Name of the generation that issued it."""
    issuedMjdTai: float


@dataclass
class VisitProducts:
    """Everything one visit-detector adds to a generation, stored in one transaction.

    Each table holds complete rows in APDB columns; ids are final (``l1db.ids``). DiaObject rows
    are *new versions*: ``validityStartMjdTai`` is the visit's midpoint and the backend closes
    the previous version of each (sets its ``validityEndMjdTai``) in the same transaction.
    """

    record: VisitRecord
    dia_sources: pd.DataFrame
    dia_objects: pd.DataFrame
    dia_forced_sources: pd.DataFrame
    ss_sources: pd.DataFrame = field(default_factory=pd.DataFrame)
    alerts: list[ArchivedAlert] = field(default_factory=list)
    """The outbox: packets to archive and send once the transaction has committed."""


class L1Database(abc.ABC):
    """One generation of the Level 1 database.

    Every call is safe to make from many reader processes while one writer stores visits:
    readers see whole visits only, and never block the writer.
    """

    generation_name: str
    generation_number: int
    """The number packed into the ids this generation makes (``l1db.ids``)."""

    # ---- visits ------------------------------------------------------------------------------
    @abc.abstractmethod
    def visit_record(self, visit: int, detector: int) -> VisitRecord | None:
        """The Visit row, or None when the visit was never seen."""

    def has_visit(self, visit: int, detector: int) -> bool:
        """True once the visit's products are stored (alerted or not)."""
        rec = self.visit_record(visit, detector)
        return rec is not None and rec.state in ("stored", "alerted")

    @abc.abstractmethod
    def visits(self) -> pd.DataFrame:
        """The whole Visit table (one row per visit-detector, every state)."""

    @abc.abstractmethod
    def store_visit(self, products: VisitProducts) -> None:
        """Write one visit's rows, its Visit row (state ``stored``) and its outbox, atomically.

        Raises
        ------
        DuplicateVisitError (from diaflow.errors)
            If the visit is already stored: nothing is written.
        """

    @abc.abstractmethod
    def quarantine_visit(self, record: VisitRecord) -> None:
        """Record a visit that could not be processed (state ``quarantined``); idempotent."""

    @abc.abstractmethod
    def outbox(self, visit: int, detector: int) -> list[ArchivedAlert]:
        """The stored packets of a visit not yet marked alerted (empty once it is)."""

    @abc.abstractmethod
    def mark_alerted(self, visit: int, detector: int) -> None:
        """Set the visit to ``alerted`` and drop its outbox, in one transaction."""

    # ---- reads -------------------------------------------------------------------------------
    @abc.abstractmethod
    def dia_objects(self, region: Region) -> pd.DataFrame:
        """Latest version of every DiaObject whose position lies in ``region``."""

    @abc.abstractmethod
    def dia_sources(
        self, region: Region, end_mjd: float, *, days: float = DAYS_PER_YEAR
    ) -> pd.DataFrame:
        """DiaSources in ``region`` with ``end_mjd - days <= midpointMjdTai < end_mjd``."""

    @abc.abstractmethod
    def dia_forced_sources(
        self, region: Region, end_mjd: float, *, days: float = DAYS_PER_YEAR
    ) -> pd.DataFrame:
        """DiaForcedSources in ``region`` within the same window."""

    @abc.abstractmethod
    def dia_object_history(self, dia_object_id: int) -> pd.DataFrame:
        """Every version of one DiaObject, oldest first."""

    # ---- moving objects ----------------------------------------------------------------------
    @abc.abstractmethod
    def ss_objects(self) -> pd.DataFrame:
        """The SSObject table."""

    @abc.abstractmethod
    def upsert_ss_objects(self, ss_objects: pd.DataFrame) -> None:
        """Insert or replace SSObject rows by ``ssObjectId``, in one transaction."""

    @abc.abstractmethod
    def reassign_dia_sources(
        self, dia_source_ids: np.ndarray, ss_object_id: int, ss_sources: pd.DataFrame
    ) -> None:
        """Attribute DiaSources to an SSObject after the fact (daytime MOPS), in one transaction.

        Sets their ``ssObjectId``, clears ``diaObjectId``, adds the SSSource rows; DiaObjects
        left with no DiaSource get a final version (``validityEndMjdTai`` set).
        """

    # ---- housekeeping ------------------------------------------------------------------------
    @abc.abstractmethod
    def count(self, table: str) -> int:
        """Rows in one table (DiaObject counts latest versions only)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> L1Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AlertArchive(abc.ABC):
    """Every alert ever issued: append-only, enforced by the database itself."""

    @abc.abstractmethod
    def append(self, alerts: list[ArchivedAlert]) -> int:
        """Add packets in one transaction; returns how many were new.

        A packet whose ``diaSourceId`` is already archived with identical bytes is skipped (a
        retry after a crash); with different bytes, :class:`~diaflow.errors.DiaflowError` is
        raised and nothing is written.
        """

    @abc.abstractmethod
    def get(self, dia_source_id: int) -> ArchivedAlert | None:
        """One archived packet."""

    @abc.abstractmethod
    def for_visit(self, visit: int, detector: int) -> list[ArchivedAlert]:
        """The packets of one visit-detector, ordered by diaSourceId."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of archived packets."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> AlertArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
