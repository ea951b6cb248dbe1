"""The PostgreSQL backend: one schema per generation, q3c spatial indexes, time partitions.

DiaSource and DiaForcedSource are partitioned by RANGE on ``midpointMjdTai`` in
``PARTITION_DAYS``-day partitions, created on demand inside the transaction that first needs
them, so a time-window read touches only the partitions it overlaps. Rows go in with binary
``COPY``. Cone searches use ``q3c_radial_query`` on ``q3c_ang2ipix(ra, dec)`` indexes
(Koposov & Bartunov 2006). Each client sets ``search_path`` to its generation's schema for the
session, so the SQL is the same in every generation.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from ..errors import BadInputError, ConfigError, DatabaseError, DuplicateVisitError
from . import _common
from ._pg import COPY_TYPES, SQL_TYPES, Session, advisory_lock, check_schema_name, q
from ._rows import to_frame, to_rows
from .api import DAYS_PER_YEAR, ArchivedAlert, L1Database, Region, VisitProducts, VisitRecord
from .schema import (
    SCHEMA_VERSION,
    TABLE_NAMES,
    TableSpec,
    apdb_version,
    coerce,
    table_spec,
)

__all__ = ["PARTITION_DAYS", "PostgresL1Database"]

logger = logging.getLogger(__name__)

PARTITION_DAYS = 30
"""Width of the DiaSource and DiaForcedSource time partitions, in days of midpointMjdTai."""
ANALYZE_EVERY = 16
"""Stores between refreshes of the planner's statistics of the partitions written."""

_PARTITIONED = ("DiaSource", "DiaForcedSource")
_INDEXES = {
    "DiaSource": [("visit", "detector"), ("diaObjectId",), ("ssObjectId",)],
    "SSSource": [("ssObjectId",)],
    "Outbox": [("visit", "detector")],
}
_RADIUS_SLACK_DEG = 1e-7
"""Added to the q3c radius; the exact cut is Region.contains, as on SQLite."""


def create_table_sql(spec: TableSpec) -> list[str]:
    """``CREATE TABLE``/``INDEX`` statements of one table (unqualified: uses search_path)."""
    cols = [
        f"{q(c.name)} {SQL_TYPES[c.datatype]}" + ("" if c.nullable else " NOT NULL")
        for c in spec.columns
    ]
    key = list(spec.primary_key)
    tail = ""
    if spec.name in _PARTITIONED:
        key.append("midpointMjdTai")  # a partitioned table's key must hold the partition key
        tail = ' PARTITION BY RANGE ("midpointMjdTai")'
    cols.append(f"PRIMARY KEY ({', '.join(map(q, key))})")
    stmts = [f"CREATE TABLE IF NOT EXISTS {q(spec.name)} ({', '.join(cols)}){tail}"]
    if spec.spatial:
        stmts.append(
            f"CREATE INDEX IF NOT EXISTS {q(spec.name + '_q3c')} ON {q(spec.name)} "
            '(q3c_ang2ipix("ra", "dec"))'
        )
    for idx in _INDEXES.get(spec.name, []):
        name = f"{spec.name}_{'_'.join(idx)}"
        stmts.append(
            f"CREATE INDEX IF NOT EXISTS {q(name)} ON {q(spec.name)} ({', '.join(map(q, idx))})"
        )
    return stmts


class PostgresL1Database(L1Database):
    """One generation of the Level 1 database in one PostgreSQL schema.

    Parameters
    ----------
    dsn
        libpq connection string, e.g. ``"host=127.0.0.1 user=postgres dbname=l1"``.
    schema
        The generation's schema (lower-case identifier); created with its tables unless
        ``readonly``.
    generation_name, generation_number
        Checked against the schema's metadata when it exists.
    readonly
        Sessions with ``default_transaction_read_only``: every write is refused.

    Notes
    -----
    Each call is one statement or one transaction: if the server goes away mid-visit the
    transaction is rolled back by the server and :class:`~diaflow.errors.DatabaseUnavailableError`
    is raised; the next call reconnects.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str,
        generation_name: str,
        generation_number: int,
        readonly: bool = False,
    ) -> None:
        self.dsn = dsn
        self.schema = check_schema_name(schema)
        self.generation_name = generation_name
        self.generation_number = int(generation_number)
        self.readonly = readonly
        self._s = Session(dsn, search_path=f"{self.schema}, public", readonly=readonly)
        self._written: set[str] = set()
        self._new_partition = False
        self._stores = 0
        try:
            self._setup()
        except BaseException:
            self._s.close()
            raise

    # ---- setup -------------------------------------------------------------------------------
    def _setup(self) -> None:
        meta = self._metadata()
        if not meta:
            if self.readonly:
                raise ConfigError(f"no L1 database in PostgreSQL schema {self.schema}")
            self._create()
            meta = self._metadata()
        want = {
            "generation_name": self.generation_name,
            "generation_number": str(self.generation_number),
            "schema_version": SCHEMA_VERSION,
        }
        for key, value in want.items():
            if meta.get(key) != value:
                raise ConfigError(
                    f"schema {self.schema} holds {key}={meta.get(key)!r}, not {value!r}"
                )

    def _metadata(self) -> dict[str, str]:
        with self._s.cursor("reading metadata") as cur:
            cur.execute("SELECT to_regclass(%s)", (f'{self.schema}."metadata"',))
            if cur.fetchone()[0] is None:  # type: ignore[index]
                return {}
            cur.execute('SELECT name, value FROM "metadata"')
            return dict(cur.fetchall())  # type: ignore[arg-type]

    def _create(self) -> None:
        meta = {
            "generation_name": self.generation_name,
            "generation_number": str(self.generation_number),
            "schema_version": SCHEMA_VERSION,
            "apdb_version": apdb_version(),
            "partition_days": str(PARTITION_DAYS),
            "created": repr(time.time()),
        }
        with self._s.cursor(f"creating schema {self.schema}", write=True) as cur:
            advisory_lock(cur, "diaflow-create")
            cur.execute("CREATE EXTENSION IF NOT EXISTS q3c SCHEMA public")
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            for name in TABLE_NAMES:
                for stmt in create_table_sql(table_spec(name)):
                    cur.execute(stmt)
            cur.executemany(
                'INSERT INTO "metadata" (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING',
                list(meta.items()),
            )
        logger.info("created L1 database schema %s (%s)", self.schema, self.generation_name)

    # ---- helpers -----------------------------------------------------------------------------
    def _copy(self, cur: psycopg.Cursor[Any], spec: TableSpec, df: pd.DataFrame) -> None:
        if not len(df):
            return
        names = spec.names
        sql = f"COPY {q(spec.name)} ({', '.join(map(q, names))}) FROM STDIN (FORMAT BINARY)"
        with cur.copy(sql) as cp:
            cp.set_types([COPY_TYPES[c.datatype] for c in spec.columns])
            for row in to_rows(df, names, nan_as_none=True):
                cp.write_row(row)

    def _ensure_partitions(self, cur: psycopg.Cursor[Any], table: str, mjd: np.ndarray) -> None:
        for k in np.unique(np.floor(mjd / PARTITION_DAYS).astype(np.int64)).tolist():
            name = f"{table}_p{k}"
            self._written.add(name)
            cur.execute("SELECT to_regclass(%s)", (f"{self.schema}.{q(name)}",))
            if cur.fetchone()[0] is not None:  # type: ignore[index]
                continue
            self._new_partition = True
            advisory_lock(cur, f"{self.schema}.{table}")
            lo, hi = k * PARTITION_DAYS, (k + 1) * PARTITION_DAYS
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {q(name)} PARTITION OF {q(table)} "
                f"FOR VALUES FROM ({lo}) TO ({hi})"
            )
            logger.info("created partition %s.%s [%d, %d)", self.schema, name, lo, hi)

    def _select(
        self, spec: TableSpec, where: str = "", params: Any = (), *, table: str | None = None
    ) -> pd.DataFrame:
        cols = ", ".join(map(q, spec.names))
        with self._s.cursor(f"reading {spec.name}") as cur:
            cur.execute(f"SELECT {cols} FROM {q(table or spec.name)} {where}", params)
            return to_frame(cur.fetchall(), spec)

    # ---- visits ------------------------------------------------------------------------------
    def visit_record(self, visit: int, detector: int) -> VisitRecord | None:
        """The Visit row, or None when the visit was never seen."""
        cols = ", ".join(map(q, _common.VISIT.names))
        with self._s.cursor("reading Visit") as cur:
            cur.execute(
                f'SELECT {cols} FROM "Visit" WHERE visit = %s AND detector = %s',
                (int(visit), int(detector)),
            )
            row = cur.fetchone()
        return _common.visit_record(tuple(row)) if row else None

    def visits(self) -> pd.DataFrame:
        """The whole Visit table, ordered by visit and detector."""
        return self._select(_common.VISIT, "ORDER BY visit, detector")

    def _upsert_visit(self, cur: psycopg.Cursor[Any], rec: VisitRecord, *, only_if: str) -> bool:
        names = _common.VISIT.names
        sets = ", ".join(f"{q(n)} = EXCLUDED.{q(n)}" for n in names[2:])
        cur.execute(
            f'INSERT INTO "Visit" ({", ".join(map(q, names))}) '
            f"VALUES ({', '.join(['%s'] * len(names))}) "
            f'ON CONFLICT (visit, detector) DO UPDATE SET {sets} WHERE "Visit".state = %s '
            "RETURNING visit",
            (*_common.visit_row(rec), only_if),
        )
        return cur.fetchone() is not None

    def _state(self, cur: psycopg.Cursor[Any], visit: int, detector: int) -> str:
        cur.execute(
            'SELECT state FROM "Visit" WHERE visit = %s AND detector = %s', (visit, detector)
        )
        row = cur.fetchone()
        return str(row[0]) if row else "not stored"

    def store_visit(self, products: VisitProducts) -> None:
        """Write one visit's rows, Visit row and outbox in one transaction (COPY for rows).

        Raises
        ------
        DuplicateVisitError
            The visit is already stored; nothing is written.
        BadInputError
            Rows that do not fit, or DiaObject versions older than the stored latest ones.
        DatabaseUnavailableError
            The server went away: the transaction is rolled back, retry later.
        """
        p = _common.prepare(products)
        rec = p.record
        ids = p.dia_objects["diaObjectId"].tolist()
        starts = p.dia_objects["validityStartMjdTai"].tolist()
        with self._s.cursor(f"storing visit {rec.visit}/{rec.detector}", write=True) as cur:
            # The Visit row first: it locks the visit against a concurrent store of the same.
            if not self._upsert_visit(cur, rec, only_if="quarantined"):
                state = self._state(cur, rec.visit, rec.detector)
                raise DuplicateVisitError(
                    "duplicate_visit",
                    f"visit {rec.visit}/{rec.detector} is already {state} in generation "
                    f"{self.generation_name}; nothing was written",
                )
            if ids:
                self._new_versions(cur, p.dia_objects, ids, starts)
            for table, df in (
                ("DiaSource", p.dia_sources),
                ("DiaForcedSource", p.dia_forced_sources),
            ):
                if len(df):
                    self._ensure_partitions(cur, table, df["midpointMjdTai"].to_numpy())
                    self._copy(cur, table_spec(table), df)
            if len(p.ss_sources):
                cur.execute(
                    'DELETE FROM "SSSource" WHERE "diaSourceId" = ANY(%s)',
                    (p.ss_sources["diaSourceId"].tolist(),),
                )
                self._copy(cur, table_spec("SSSource"), p.ss_sources)
            if p.alerts:
                with cur.copy('COPY "Outbox" FROM STDIN (FORMAT BINARY)') as cp:
                    cp.set_types([COPY_TYPES[c.datatype] for c in table_spec("Outbox").columns])
                    for a in p.alerts:
                        cp.write_row(_common.alert_row(a))
        self._stores += 1
        if self._new_partition or self._stores % ANALYZE_EVERY == 0:
            self._analyze()

    def _analyze(self) -> None:
        """Refresh the planner's statistics of the partitions written lately.

        Without them (a new partition, or a server with autovacuum off) the planner reads a
        time window through the primary key and filters every row with q3c, ~8x slower than
        through the q3c index. Best effort: a failure here is logged, never raised.
        """
        tables = [*sorted(self._written), "DiaObjectLast"]
        try:
            with self._s.cursor("analysing", write=True) as cur:
                for name in tables:
                    cur.execute(f"ANALYZE {q(name)}")
        except Exception as exc:  # statistics are an optimisation; the store has committed
            logger.warning("ANALYZE of %s failed: %s", tables, exc)
        self._written.clear()
        self._new_partition = False

    def _new_versions(
        self, cur: psycopg.Cursor[Any], objs: pd.DataFrame, ids: list[int], starts: list[float]
    ) -> None:
        cur.execute(
            'SELECT "diaObjectId", "validityStartMjdTai" FROM "DiaObjectLast" '
            'WHERE "diaObjectId" = ANY(%s)',
            (ids,),
        )
        prev = dict(cur.fetchall())  # type: ignore[arg-type]
        new_start = dict(zip(ids, starts, strict=True))
        older = [i for i, s in prev.items() if new_start[i] < s]
        if older:
            raise BadInputError(
                "out_of_order",
                f"DiaObject {older[0]}: new version starts at {new_start[older[0]]} before the "
                f"stored latest one ({prev[older[0]]}); store visits in time order",
            )
        if prev:
            keys = list(prev)
            cur.execute(
                'UPDATE "DiaObject" AS o SET "validityEndMjdTai" = n.s '
                "FROM unnest(%s::bigint[], %s::float8[], %s::float8[]) AS n(id, prev, s) "
                'WHERE o."diaObjectId" = n.id AND o."validityStartMjdTai" = n.prev',
                (keys, [prev[k] for k in keys], [new_start[k] for k in keys]),
            )
            # A second version at the same start (two detectors of one visit) replaces it.
            cur.execute(
                'DELETE FROM "DiaObject" AS o USING unnest(%s::bigint[], %s::float8[]) AS n(id, s) '
                'WHERE o."diaObjectId" = n.id AND o."validityStartMjdTai" = n.s',
                (ids, starts),
            )
            cur.execute('DELETE FROM "DiaObjectLast" WHERE "diaObjectId" = ANY(%s)', (keys,))
        self._copy(cur, table_spec("DiaObject"), objs)
        cols = ", ".join(f"o.{q(n)}" for n in table_spec("DiaObject").names)
        cur.execute(
            f'INSERT INTO "DiaObjectLast" SELECT {cols} FROM "DiaObject" AS o '
            "JOIN unnest(%s::bigint[], %s::float8[]) AS n(id, s) "
            'ON o."diaObjectId" = n.id AND o."validityStartMjdTai" = n.s',
            (ids, starts),
        )

    def quarantine_visit(self, record: VisitRecord) -> None:
        """Record a visit that could not be processed; idempotent.

        Raises
        ------
        DuplicateVisitError
            The visit is already stored: its products are kept and nothing is written.
        """
        rec = dataclasses.replace(record, state="quarantined")
        with self._s.cursor(f"quarantining {rec.visit}/{rec.detector}", write=True) as cur:
            if not self._upsert_visit(cur, rec, only_if="quarantined"):
                state = self._state(cur, rec.visit, rec.detector)
                raise DuplicateVisitError(
                    "duplicate_visit",
                    f"visit {rec.visit}/{rec.detector} is already {state}; not quarantined",
                )

    def outbox(self, visit: int, detector: int) -> list[ArchivedAlert]:
        """The stored packets of a visit not yet marked alerted, ordered by diaSourceId."""
        cols = ", ".join(map(q, _common.ALERT_FIELDS))
        with self._s.cursor("reading Outbox") as cur:
            cur.execute(
                f'SELECT {cols} FROM "Outbox" WHERE visit = %s AND detector = %s '
                'ORDER BY "diaSourceId"',
                (int(visit), int(detector)),
            )
            return [_common.archived_alert(tuple(r)) for r in cur.fetchall()]

    def mark_alerted(self, visit: int, detector: int) -> None:
        """Set the visit to ``alerted`` and drop its outbox, in one transaction; idempotent."""
        v, d = int(visit), int(detector)
        with self._s.cursor(f"marking visit {v}/{d} alerted", write=True) as cur:
            state = self._state(cur, v, d)
            if state not in ("stored", "alerted"):
                raise DatabaseError(
                    f"visit {v}/{d} is {state}; only a stored visit can be marked alerted"
                )
            cur.execute(
                "UPDATE \"Visit\" SET state = 'alerted' WHERE visit = %s AND detector = %s", (v, d)
            )
            cur.execute('DELETE FROM "Outbox" WHERE visit = %s AND detector = %s', (v, d))

    # ---- reads -------------------------------------------------------------------------------
    def _region_select(
        self, table: str, region: Region, window: tuple[float, float] | None = None
    ) -> pd.DataFrame:
        where = 'WHERE q3c_radial_query("ra", "dec", %s, %s, %s)'
        params: list[Any] = [region.ra % 360.0, region.dec, region.radius + _RADIUS_SLACK_DEG]
        if window is not None:
            where += ' AND "midpointMjdTai" >= %s AND "midpointMjdTai" < %s'
            params += list(window)
        spec = table_spec("DiaObject" if table == "DiaObjectLast" else table)
        df = self._select(spec, where, params, table=table)
        return _common.region_filter(df, region)

    def dia_objects(self, region: Region) -> pd.DataFrame:
        """Latest version of every live DiaObject in ``region`` (from DiaObjectLast)."""
        return self._region_select("DiaObjectLast", region)

    def dia_sources(
        self, region: Region, end_mjd: float, *, days: float = DAYS_PER_YEAR
    ) -> pd.DataFrame:
        """DiaSources in ``region`` with ``end_mjd - days <= midpointMjdTai < end_mjd``."""
        return self._region_select("DiaSource", region, (end_mjd - days, end_mjd))

    def dia_forced_sources(
        self, region: Region, end_mjd: float, *, days: float = DAYS_PER_YEAR
    ) -> pd.DataFrame:
        """DiaForcedSources in ``region`` within the same window."""
        return self._region_select("DiaForcedSource", region, (end_mjd - days, end_mjd))

    def dia_object_history(self, dia_object_id: int) -> pd.DataFrame:
        """Every version of one DiaObject, oldest first."""
        return self._select(
            table_spec("DiaObject"),
            'WHERE "diaObjectId" = %s ORDER BY "validityStartMjdTai"',
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
        if not len(df):
            return
        with self._s.cursor("upserting SSObjects", write=True) as cur:
            cur.execute(
                'DELETE FROM "SSObject" WHERE "ssObjectId" = ANY(%s)', (df["ssObjectId"].tolist(),)
            )
            self._copy(cur, spec, df)

    def reassign_dia_sources(
        self, dia_source_ids: np.ndarray, ss_object_id: int, ss_sources: pd.DataFrame
    ) -> None:
        """Attribute DiaSources to an SSObject, retiring DiaObjects left without sources.

        As on SQLite: a retired DiaObject's latest version ends at the latest stored visit's
        midpoint (never before its start) and leaves DiaObjectLast.

        Raises
        ------
        BadInputError
            Unknown DiaSource ids, or SSSource rows for other sources; nothing is written.
        """
        ids = _common.check_ids(dia_source_ids, "reassign_dia_sources")
        sss = _common.coerce_ss_sources(ss_sources, ids, ss_object_id)
        with self._s.cursor(f"reassigning to SSObject {ss_object_id}", write=True) as cur:
            cur.execute(
                'SELECT "diaSourceId", "diaObjectId" FROM "DiaSource" '
                'WHERE "diaSourceId" = ANY(%s)',
                (ids,),
            )
            found = cur.fetchall()
            _common.check_found(ids, [r[0] for r in found])
            touched = sorted({r[1] for r in found if r[1] is not None})
            cur.execute(
                'UPDATE "DiaSource" SET "ssObjectId" = %s, "diaObjectId" = NULL '
                'WHERE "diaSourceId" = ANY(%s)',
                (int(ss_object_id), ids),
            )
            if len(sss):
                cur.execute(
                    'DELETE FROM "SSSource" WHERE "diaSourceId" = ANY(%s)',
                    (sss["diaSourceId"].tolist(),),
                )
                self._copy(cur, table_spec("SSSource"), sss)
            if not touched:
                return
            cur.execute(
                "SELECT t.id FROM unnest(%s::bigint[]) AS t(id) WHERE NOT EXISTS "
                '(SELECT 1 FROM "DiaSource" AS s WHERE s."diaObjectId" = t.id)',
                (touched,),
            )
            orphans = [r[0] for r in cur.fetchall()]
            if not orphans:
                return
            cur.execute('SELECT max("midpointMjdTai") FROM "Visit" WHERE state <> \'quarantined\'')
            now = cur.fetchone()[0]  # type: ignore[index]
            cur.execute(
                'UPDATE "DiaObject" AS o SET "validityEndMjdTai" = '
                'greatest(%s::float8, l."validityStartMjdTai") FROM "DiaObjectLast" AS l '
                'WHERE l."diaObjectId" = o."diaObjectId" '
                'AND l."validityStartMjdTai" = o."validityStartMjdTai" '
                'AND l."diaObjectId" = ANY(%s)',
                (now if now is not None else 0.0, orphans),
            )
            cur.execute('DELETE FROM "DiaObjectLast" WHERE "diaObjectId" = ANY(%s)', (orphans,))
            logger.info("retired %d DiaObjects left without DiaSources", len(orphans))

    # ---- housekeeping ------------------------------------------------------------------------
    def count(self, table: str) -> int:
        """Rows in one table (DiaObject counts latest versions only)."""
        if table not in TABLE_NAMES:
            table_spec(table)
            raise BadInputError("unknown_table", f"{table} is not a table of a generation")
        name = "DiaObjectLast" if table == "DiaObject" else table
        with self._s.cursor(f"counting {table}") as cur:
            cur.execute(f"SELECT count(*) FROM {q(name)}")
            return int(cur.fetchone()[0])  # type: ignore[index]

    @property
    def backend_pid(self) -> int:
        """Server process of this client's session (to cut it off in tests)."""
        return self._s.backend_pid

    def close(self) -> None:
        """Close the session (idempotent)."""
        self._s.close()
