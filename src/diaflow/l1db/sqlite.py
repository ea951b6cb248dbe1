"""The SQLite backend: one file per generation, WAL mode, declination-zone spatial index.

Concurrency: one writer at a time (``BEGIN IMMEDIATE`` takes the write lock, others wait up to
``BUSY_TIMEOUT_S``); any number of readers, each statement reading one committed snapshot
(write-ahead log), so readers never block the writer and never see half a visit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from ..errors import (
    BadInputError,
    ConfigError,
    DatabaseError,
    DuplicateVisitError,
)
from . import _common
from ._checkpoint import BACKSTOP_PAGES, Checkpointer
from ._rows import to_frame, to_rows
from ._sqlite_ddl import create_table_sql, read_metadata, translate_error
from ._sqlite_ddl import quote_ident as _q
from ._zones import ZONE_HEIGHT_DEG, zone_ranges
from .api import DAYS_PER_YEAR, ArchivedAlert, L1Database, Region, VisitProducts, VisitRecord
from .schema import (
    SCHEMA_VERSION,
    TABLE_NAMES,
    TableSpec,
    apdb_version,
    coerce,
    table_spec,
)

__all__ = ["BUSY_TIMEOUT_S", "SqliteL1Database", "create_table_sql", "read_metadata"]

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another writer's transaction before giving up."""


class SqliteL1Database(L1Database):
    """One generation of the Level 1 database in one SQLite file.

    Parameters
    ----------
    path
        The database file (created with its tables unless ``readonly``).
    generation_name, generation_number
        The generation this file holds; checked against its metadata when it exists.
    readonly
        Open with ``mode=ro`` for a reader (web service, alert history, tests): every write
        raises.

    Notes
    -----
    Durability: WAL with ``synchronous=NORMAL``. A committed visit survives the process being
    killed at any point; after a power cut or OS crash the database is never corrupt, but
    the last visits committed before it may be rolled back (then they are simply not stored,
    and the runner re-processes them). ``synchronous=FULL`` would add an fsync per visit.
    Checkpoints (the fsyncs) run in a background thread, off the storing path
    (``l1db._checkpoint``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        generation_name: str,
        generation_number: int,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.generation_name = generation_name
        self.generation_number = int(generation_number)
        self.readonly = readonly
        self._lock = threading.RLock()
        if readonly and not self.path.exists():
            raise ConfigError(f"no L1 database at {self.path} (readonly open creates nothing)")
        try:
            if readonly:
                uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=BUSY_TIMEOUT_S,
                )
        except sqlite3.Error as exc:
            raise translate_error(exc, f"opening {self.path}") from exc
        self._conn: sqlite3.Connection | None = conn
        self._checkpointer: Checkpointer | None = None
        try:
            self._setup()
        except BaseException:
            conn.close()
            raise

    # ---- setup -------------------------------------------------------------------------------
    def _setup(self) -> None:
        c = self._c
        c.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        c.execute("PRAGMA cache_size = -65536")
        c.execute("PRAGMA temp_store = MEMORY")
        if self.readonly:
            c.execute("PRAGMA query_only = ON")
        else:
            mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ConfigError(f"{self.path}: cannot use WAL mode (got {mode})")
            c.execute("PRAGMA synchronous = NORMAL")
            c.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            c.execute(f"PRAGMA journal_size_limit = {64 * 2**20}")
        meta = self._metadata()
        if not meta:
            if self.readonly:
                raise ConfigError(f"{self.path} is not an initialized L1 database")
            self._create()
            meta = self._metadata()
        want = {"generation_name": self.generation_name}
        want["generation_number"] = str(self.generation_number)
        for key, value in want.items():
            if meta.get(key) != value:
                raise ConfigError(
                    f"{self.path} holds {key}={meta.get(key)!r}, not {value!r}; open it with "
                    "the generation it was made for"
                )
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path} has layout version {meta.get('schema_version')!r}; this diaflow "
                f"reads version {SCHEMA_VERSION}"
            )
        self._zone_height = float(meta["zone_height_deg"])
        if not self.readonly:
            self._checkpointer = Checkpointer(self.path, busy_timeout_ms=int(BUSY_TIMEOUT_S * 1000))

    def _metadata(self) -> dict[str, str]:
        try:
            rows = self._c.execute('SELECT name, value FROM "metadata"').fetchall()
        except sqlite3.OperationalError:
            return {}
        return dict(rows)

    def _create(self) -> None:
        meta = {
            "generation_name": self.generation_name,
            "generation_number": str(self.generation_number),
            "schema_version": SCHEMA_VERSION,
            "apdb_version": apdb_version(),
            "zone_height_deg": repr(ZONE_HEIGHT_DEG),
            "created": repr(time.time()),
        }
        with self._transaction("creating the tables") as cur:
            for name in TABLE_NAMES:
                for stmt in create_table_sql(table_spec(name)):
                    cur.execute(stmt)
            cur.execute(
                'CREATE INDEX IF NOT EXISTS "idx_DiaSource_ssObjectId" ON "DiaSource" '
                '("ssObjectId") WHERE "ssObjectId" IS NOT NULL'
            )
            cur.executemany(
                'INSERT OR IGNORE INTO "metadata" (name, value) VALUES (?, ?)', meta.items()
            )
        logger.info("created L1 database %s (generation %s)", self.path, self.generation_name)

    @property
    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DatabaseError(f"{self.path}: the database was closed")
        return self._conn

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Cursor]:
        if self.readonly:
            raise DatabaseError(f"{self.path}: {what} needs a writer; this one is read-only")
        with self._lock:
            cur = self._c.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise translate_error(exc, what) from exc
            try:
                yield cur
                cur.execute("COMMIT")
                if self._checkpointer is not None:
                    self._checkpointer.poke()
            except sqlite3.Error as exc:
                self._rollback()
                raise translate_error(exc, what) from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _fetch(self, sql: str, params: Any = (), what: str = "reading") -> list[Any]:
        with self._lock:
            try:
                return self._c.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise translate_error(exc, what) from exc

    def _select(self, spec: TableSpec, where: str = "", params: Any = ()) -> pd.DataFrame:
        cols = ", ".join(_q(n) for n in spec.names)
        rows = self._fetch(f"SELECT {cols} FROM {_q(spec.name)} {where}", params, spec.name)
        return to_frame(rows, spec)

    def _insert(self, cur: sqlite3.Cursor, spec: TableSpec, df: pd.DataFrame, verb: str) -> None:
        if not len(df):
            return
        names = spec.names
        marks = ", ".join("?" * len(names))
        sql = f"{verb} INTO {_q(spec.name)} ({', '.join(map(_q, names))}) VALUES ({marks})"
        cur.executemany(sql, to_rows(df, names, nan_as_none=False, bool_as_int=True))

    # ---- visits ------------------------------------------------------------------------------
    def visit_record(self, visit: int, detector: int) -> VisitRecord | None:
        """The Visit row, or None when the visit was never seen."""
        cols = ", ".join(map(_q, _common.VISIT.names))
        rows = self._fetch(
            f'SELECT {cols} FROM "Visit" WHERE visit = ? AND detector = ?',
            (int(visit), int(detector)),
        )
        return _common.visit_record(rows[0]) if rows else None

    def visits(self) -> pd.DataFrame:
        """The whole Visit table, ordered by visit and detector."""
        return self._select(_common.VISIT, "ORDER BY visit, detector")

    def store_visit(self, products: VisitProducts) -> None:
        """Write one visit's rows, Visit row and outbox in one ``BEGIN IMMEDIATE`` transaction.

        Previous versions of the DiaObjects it updates are closed (``validityEndMjdTai`` set
        to the new version's start) and their DiaObjectLast rows replaced.

        Raises
        ------
        DuplicateVisitError
            The visit is already stored; nothing is written.
        BadInputError
            Rows that do not fit the tables or the visit, or a DiaObject version older than
            the stored latest one (visits must be stored in time order); nothing is written.
        """
        p = _common.prepare(products)
        rec = p.record
        t0 = time.perf_counter()
        obj_ids = p.dia_objects["diaObjectId"].tolist()
        starts = p.dia_objects["validityStartMjdTai"].tolist()
        with self._transaction(f"storing visit {rec.visit}/{rec.detector}") as cur:
            row = cur.execute(
                'SELECT state FROM "Visit" WHERE visit = ? AND detector = ?',
                (rec.visit, rec.detector),
            ).fetchone()
            if row is not None and row[0] in ("stored", "alerted"):
                raise DuplicateVisitError(
                    "duplicate_visit",
                    f"visit {rec.visit}/{rec.detector} is already {row[0]} in generation "
                    f"{self.generation_name}; nothing was written",
                )
            if obj_ids:
                self._close_versions(cur, obj_ids, starts)
                # New DiaObject rows get rowids above the current maximum (we hold the write
                # lock and insert without replacing): copy them to DiaObjectLast inside SQLite
                # instead of binding them twice.
                (top,) = cur.execute('SELECT coalesce(max(rowid), 0) FROM "DiaObject"').fetchone()
                self._insert(cur, table_spec("DiaObject"), p.dia_objects, "INSERT")
                cols = ", ".join(map(_q, table_spec("DiaObject").names))
                cur.execute(
                    f'INSERT OR REPLACE INTO "DiaObjectLast" ({cols}) '
                    f'SELECT {cols} FROM "DiaObject" WHERE rowid > ?',
                    (top,),
                )
            self._insert(cur, table_spec("DiaSource"), p.dia_sources, "INSERT")
            self._insert(cur, table_spec("DiaForcedSource"), p.dia_forced_sources, "INSERT")
            self._insert(cur, table_spec("SSSource"), p.ss_sources, "INSERT OR REPLACE")
            if p.alerts:
                cur.executemany(
                    f'INSERT INTO "Outbox" VALUES ({", ".join("?" * 8)})',
                    [_common.alert_row(a) for a in p.alerts],
                )
            cur.execute(
                f'INSERT OR REPLACE INTO "Visit" VALUES ({", ".join("?" * 13)})',
                _common.visit_row(rec),
            )
        logger.debug(
            "stored visit %d/%d: %d DiaSources, %d DiaObject versions, %d forced, %.3fs",
            rec.visit,
            rec.detector,
            len(p.dia_sources),
            len(obj_ids),
            len(p.dia_forced_sources),
            time.perf_counter() - t0,
        )

    def _close_versions(self, cur: sqlite3.Cursor, ids: list[int], starts: list[float]) -> None:
        prev = dict(
            cur.execute(
                'SELECT "diaObjectId", "validityStartMjdTai" FROM "DiaObjectLast" '
                'WHERE "diaObjectId" IN (SELECT value FROM json_each(?))',
                (json.dumps(ids),),
            ).fetchall()
        )
        if not prev:
            return
        new_start = dict(zip(ids, starts, strict=True))
        older = [i for i, s in prev.items() if new_start[i] < s]
        if older:
            raise BadInputError(
                "out_of_order",
                f"DiaObject {older[0]}: new version starts at {new_start[older[0]]} before the "
                f"stored latest one ({prev[older[0]]}); store visits in time order",
            )
        closing = [(new_start[i], i, s) for i, s in prev.items() if s < new_start[i]]
        cur.executemany(
            'UPDATE "DiaObject" SET "validityEndMjdTai" = ? '
            'WHERE "diaObjectId" = ? AND "validityStartMjdTai" = ?',
            closing,
        )
        # A second version at the same start (two detectors of one visit) replaces the first.
        cur.executemany(
            'DELETE FROM "DiaObject" WHERE "diaObjectId" = ? AND "validityStartMjdTai" = ?',
            [(i, s) for i, s in prev.items() if s == new_start[i]],
        )

    def quarantine_visit(self, record: VisitRecord) -> None:
        """Record a visit that could not be processed; idempotent.

        Raises
        ------
        DuplicateVisitError
            The visit is already stored: its products are kept and nothing is written.
        """
        rec = dataclasses.replace(record, state="quarantined")
        with self._transaction(f"quarantining visit {rec.visit}/{rec.detector}") as cur:
            row = cur.execute(
                'SELECT state FROM "Visit" WHERE visit = ? AND detector = ?',
                (rec.visit, rec.detector),
            ).fetchone()
            if row is not None and row[0] != "quarantined":
                raise DuplicateVisitError(
                    "duplicate_visit",
                    f"visit {rec.visit}/{rec.detector} is already {row[0]}; not quarantined",
                )
            cur.execute(
                f'INSERT OR REPLACE INTO "Visit" VALUES ({", ".join("?" * 13)})',
                _common.visit_row(rec),
            )

    def outbox(self, visit: int, detector: int) -> list[ArchivedAlert]:
        """The stored packets of a visit not yet marked alerted, ordered by diaSourceId."""
        rows = self._fetch(
            'SELECT * FROM "Outbox" WHERE visit = ? AND detector = ? ORDER BY "diaSourceId"',
            (int(visit), int(detector)),
        )
        return [_common.archived_alert(r) for r in rows]

    def mark_alerted(self, visit: int, detector: int) -> None:
        """Set the visit to ``alerted`` and drop its outbox, in one transaction; idempotent."""
        with self._transaction(f"marking visit {visit}/{detector} alerted") as cur:
            row = cur.execute(
                'SELECT state FROM "Visit" WHERE visit = ? AND detector = ?',
                (int(visit), int(detector)),
            ).fetchone()
            if row is None or row[0] == "quarantined":
                raise DatabaseError(
                    f"visit {visit}/{detector} is {row[0] if row else 'not stored'}; only a "
                    "stored visit can be marked alerted"
                )
            cur.execute(
                "UPDATE \"Visit\" SET state = 'alerted' WHERE visit = ? AND detector = ?",
                (int(visit), int(detector)),
            )
            cur.execute(
                'DELETE FROM "Outbox" WHERE visit = ? AND detector = ?',
                (int(visit), int(detector)),
            )

    # ---- reads -------------------------------------------------------------------------------
    def _region_select(
        self, spec: TableSpec, region: Region, window: tuple[float, float] | None = None
    ) -> pd.DataFrame:
        ranges = zone_ranges(region, self._zone_height)
        values = ", ".join(["(?, ?, ?)"] * len(ranges))
        cols = ", ".join(f"t.{_q(n)}" for n in spec.names)
        sql = (
            f"WITH z(zone, lo, hi) AS (VALUES {values}) "
            f"SELECT {cols} FROM z CROSS JOIN {_q(spec.name)} AS t "
            "WHERE t.zone = z.zone AND t.ra BETWEEN z.lo AND z.hi"
        )
        params: list[Any] = [v for r in ranges for v in r]
        if window is not None:
            sql += ' AND t."midpointMjdTai" >= ? AND t."midpointMjdTai" < ?'
            params += list(window)
        df = to_frame(self._fetch(sql, params, f"{spec.name} in {region}"), spec)
        return _common.region_filter(df, region)

    def dia_objects(self, region: Region) -> pd.DataFrame:
        """Latest version of every live DiaObject in ``region`` (from DiaObjectLast)."""
        return self._region_select(table_spec("DiaObjectLast"), region)

    def dia_sources(
        self, region: Region, end_mjd: float, *, days: float = DAYS_PER_YEAR
    ) -> pd.DataFrame:
        """DiaSources in ``region`` with ``end_mjd - days <= midpointMjdTai < end_mjd``."""
        return self._region_select(table_spec("DiaSource"), region, (end_mjd - days, end_mjd))

    def dia_forced_sources(
        self, region: Region, end_mjd: float, *, days: float = DAYS_PER_YEAR
    ) -> pd.DataFrame:
        """DiaForcedSources in ``region`` within the same window."""
        return self._region_select(table_spec("DiaForcedSource"), region, (end_mjd - days, end_mjd))

    def dia_object_history(self, dia_object_id: int) -> pd.DataFrame:
        """Every version of one DiaObject, oldest first."""
        return self._select(
            table_spec("DiaObject"),
            'WHERE "diaObjectId" = ? ORDER BY "validityStartMjdTai"',
            (int(dia_object_id),),
        )

    # ---- moving objects ----------------------------------------------------------------------
    def ss_objects(self) -> pd.DataFrame:
        """The SSObject table, ordered by ssObjectId."""
        return self._select(table_spec("SSObject"), 'ORDER BY "ssObjectId"')

    def upsert_ss_objects(self, ss_objects: pd.DataFrame) -> None:
        """Insert or replace SSObject rows by ``ssObjectId``, in one transaction."""
        spec = table_spec("SSObject")
        df = coerce(ss_objects, spec)
        with self._transaction("upserting SSObjects") as cur:
            self._insert(cur, spec, df, "INSERT OR REPLACE")

    def reassign_dia_sources(
        self, dia_source_ids: np.ndarray, ss_object_id: int, ss_sources: pd.DataFrame
    ) -> None:
        """Attribute DiaSources to an SSObject, retiring DiaObjects left without sources.

        A retired DiaObject's latest version gets ``validityEndMjdTai`` = the latest stored
        visit's midpoint (never before its own start) and leaves DiaObjectLast, so association
        no longer matches to it; its history stays in DiaObject.

        Raises
        ------
        BadInputError
            Unknown DiaSource ids, or SSSource rows for other sources; nothing is written.
        """
        ids = _common.check_ids(dia_source_ids, "reassign_dia_sources")
        sss = _common.coerce_ss_sources(ss_sources, ids, ss_object_id)
        with self._transaction(f"reassigning DiaSources to SSObject {ss_object_id}") as cur:
            id_json = json.dumps(ids)
            found = cur.execute(
                'SELECT "diaSourceId", "diaObjectId" FROM "DiaSource" '
                'WHERE "diaSourceId" IN (SELECT value FROM json_each(?))',
                (id_json,),
            ).fetchall()
            _common.check_found(ids, [r[0] for r in found])
            touched = sorted({r[1] for r in found if r[1] is not None})
            cur.execute(
                'UPDATE "DiaSource" SET "ssObjectId" = ?, "diaObjectId" = NULL '
                'WHERE "diaSourceId" IN (SELECT value FROM json_each(?))',
                (int(ss_object_id), id_json),
            )
            self._insert(cur, table_spec("SSSource"), sss, "INSERT OR REPLACE")
            if not touched:
                return
            orphans = [
                r[0]
                for r in cur.execute(
                    "SELECT value FROM json_each(?) WHERE NOT EXISTS (SELECT 1 FROM "
                    '"DiaSource" WHERE "diaObjectId" = value)',
                    (json.dumps(touched),),
                ).fetchall()
            ]
            if not orphans:
                return
            (now,) = cur.execute(
                'SELECT max("midpointMjdTai") FROM "Visit" WHERE state != \'quarantined\''
            ).fetchone()
            cur.execute(
                'UPDATE "DiaObject" SET "validityEndMjdTai" = max(?, l."validityStartMjdTai") '
                'FROM "DiaObjectLast" AS l WHERE l."diaObjectId" = "DiaObject"."diaObjectId" '
                'AND l."validityStartMjdTai" = "DiaObject"."validityStartMjdTai" '
                'AND l."diaObjectId" IN (SELECT value FROM json_each(?))',
                (now if now is not None else 0.0, json.dumps(orphans)),
            )
            cur.execute(
                'DELETE FROM "DiaObjectLast" WHERE "diaObjectId" IN '
                "(SELECT value FROM json_each(?))",
                (json.dumps(orphans),),
            )
            logger.info("retired %d DiaObjects left without DiaSources", len(orphans))

    # ---- housekeeping ------------------------------------------------------------------------
    def count(self, table: str) -> int:
        """Rows in one table (DiaObject counts latest versions only)."""
        if table not in TABLE_NAMES:
            table_spec(table)  # raises with the list of tables
            raise BadInputError("unknown_table", f"{table} is not a table of a generation")
        name = "DiaObjectLast" if table == "DiaObject" else table
        return int(self._fetch(f"SELECT count(*) FROM {_q(name)}")[0][0])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
            if self._conn is not None:
                if not self.readonly:
                    with suppress(sqlite3.Error):
                        self._conn.execute("PRAGMA optimize")
                self._conn.close()
                self._conn = None
