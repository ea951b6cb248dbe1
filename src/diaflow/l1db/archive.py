"""The Alert archive: every packet ever issued, append-only at the database level.

The archive lives outside every generation (its own SQLite file, or its own PostgreSQL schema)
and keeps each packet's bytes, schema id, software version and issuing generation. The
database itself refuses to change a row, so no bug in diaflow and no user with a SQL prompt
and the usual privileges can rewrite history:

- SQLite: ``BEFORE UPDATE`` and ``BEFORE DELETE`` triggers that ``RAISE(ABORT)``, and a
  ``BEFORE INSERT`` trigger that refuses an id already archived. ``INSERT OR REPLACE`` deletes
  the old row implicitly, which fires delete triggers only with ``PRAGMA recursive_triggers``:
  every connection we open sets it, and the insert trigger refuses the replace even on a
  connection that does not.
- PostgreSQL: row triggers on ``UPDATE`` and ``DELETE`` (so ``INSERT ... ON CONFLICT DO UPDATE``
  fails too), a statement trigger on ``TRUNCATE``, and ``UPDATE, DELETE, TRUNCATE`` revoked from
  ``PUBLIC``.

What remains possible is what no trigger can stop: dropping the table or the triggers, by
the file's owner (SQLite) or the table's owner or a superuser (PostgreSQL). Run services as a
role that does not own the archive.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ArchiveConflictError, DatabaseError
from . import _common
from ._pg import COPY_TYPES, SQL_TYPES, Session, advisory_lock, check_schema_name, q
from .api import AlertArchive, ArchivedAlert
from .schema import table_spec
from .sqlite import BUSY_TIMEOUT_S, create_table_sql, translate_error

__all__ = ["PostgresAlertArchive", "SqliteAlertArchive"]

_SQLITE_TRIGGERS = [
    'CREATE TRIGGER IF NOT EXISTS "Alert_no_update" BEFORE UPDATE ON "Alert" '
    "BEGIN SELECT RAISE(ABORT, 'Alert archive is append-only: UPDATE refused'); END",
    'CREATE TRIGGER IF NOT EXISTS "Alert_no_delete" BEFORE DELETE ON "Alert" '
    "BEGIN SELECT RAISE(ABORT, 'Alert archive is append-only: DELETE refused'); END",
    'CREATE TRIGGER IF NOT EXISTS "Alert_no_replace" BEFORE INSERT ON "Alert" '
    'WHEN EXISTS (SELECT 1 FROM "Alert" WHERE "diaSourceId" = NEW."diaSourceId") '
    "BEGIN SELECT RAISE(ABORT, 'Alert archive is append-only: diaSourceId already archived'); "
    "END",
]
_COLS = ", ".join(f'"{n}"' for n in _common.ALERT_FIELDS)


def _dedupe(alerts: list[ArchivedAlert]) -> dict[int, ArchivedAlert]:
    """One alert per id; the same id twice with different bytes is a conflict."""
    out: dict[int, ArchivedAlert] = {}
    for a in alerts:
        seen = out.get(int(a.diaSourceId))
        if seen is not None and bytes(seen.payload) != bytes(a.payload):
            raise ArchiveConflictError(
                f"alert {a.diaSourceId} appears twice in one append with different bytes"
            )
        out[int(a.diaSourceId)] = a
    return out


def _conflict(ids: list[int]) -> ArchiveConflictError:
    return ArchiveConflictError(
        f"{len(ids)} alerts are archived already with different bytes (first: {ids[:5]}); "
        "the archive is never overwritten and nothing was appended"
    )


class SqliteAlertArchive(AlertArchive):
    """The Alert archive in its own SQLite file (WAL, ``synchronous=FULL``: an archived alert
    survives a power cut, since it may already have been sent)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA recursive_triggers = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise translate_error(exc, f"opening alert archive {self.path}") from exc
        self._conn: sqlite3.Connection | None = conn
        with self._transaction("creating the Alert table") as cur:
            for stmt in [*create_table_sql(table_spec("Alert")), *_SQLITE_TRIGGERS]:
                cur.execute(stmt)
            cur.execute('CREATE INDEX IF NOT EXISTS "idx_Alert_visit" ON "Alert" (visit, detector)')

    @property
    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DatabaseError(f"alert archive {self.path} was closed")
        return self._conn

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._c.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._c.in_transaction:
                    self._c.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise translate_error(exc, what) from exc
                raise

    def append(self, alerts: list[ArchivedAlert]) -> int:
        """Add packets in one transaction; returns how many were new.

        Raises
        ------
        ArchiveConflictError
            An id already archived (or repeated in ``alerts``) with other bytes; nothing is
            written.
        """
        todo = _dedupe(alerts)
        if not todo:
            return 0
        with self._transaction(f"archiving {len(todo)} alerts") as cur:
            have = dict(
                cur.execute(
                    'SELECT "diaSourceId", payload FROM "Alert" '
                    'WHERE "diaSourceId" IN (SELECT value FROM json_each(?))',
                    (json.dumps(list(todo)),),
                ).fetchall()
            )
            bad = sorted(i for i, p in have.items() if bytes(p) != bytes(todo[i].payload))
            if bad:
                raise _conflict(bad)
            new = [_common.alert_row(a) for i, a in todo.items() if i not in have]
            cur.executemany(f'INSERT INTO "Alert" ({_COLS}) VALUES ({", ".join("?" * 8)})', new)
        return len(new)

    def _read(self, where: str, params: tuple[object, ...]) -> list[ArchivedAlert]:
        with self._lock:
            try:
                rows = self._c.execute(f'SELECT {_COLS} FROM "Alert" {where}', params).fetchall()
            except sqlite3.Error as exc:
                raise translate_error(exc, "reading the alert archive") from exc
        return [_common.archived_alert(r) for r in rows]

    def get(self, dia_source_id: int) -> ArchivedAlert | None:
        """One archived packet, or None."""
        rows = self._read('WHERE "diaSourceId" = ?', (int(dia_source_id),))
        return rows[0] if rows else None

    def for_visit(self, visit: int, detector: int) -> list[ArchivedAlert]:
        """The packets of one visit-detector, ordered by diaSourceId."""
        return self._read(
            'WHERE visit = ? AND detector = ? ORDER BY "diaSourceId"', (int(visit), int(detector))
        )

    def count(self) -> int:
        """Number of archived packets."""
        with self._lock:
            return int(self._c.execute('SELECT count(*) FROM "Alert"').fetchone()[0])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresAlertArchive(AlertArchive):
    """The Alert archive in its own PostgreSQL schema (default ``diaflow_alerts``)."""

    def __init__(self, dsn: str, schema: str = "diaflow_alerts") -> None:
        self.dsn = dsn
        self.schema = check_schema_name(schema)
        self._s = Session(dsn, search_path=f"{self.schema}, public", readonly=False)
        try:
            self._create()
        except BaseException:
            self._s.close()
            raise

    def _create(self) -> None:
        s = self.schema
        spec = table_spec("Alert")
        cols = ", ".join(f"{q(c.name)} {SQL_TYPES[c.datatype]} NOT NULL" for c in spec.columns)
        with self._s.cursor("creating the Alert archive", write=True) as cur:
            advisory_lock(cur, "diaflow-create")
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            cur.execute(
                f'CREATE TABLE IF NOT EXISTS {s}."Alert" ({cols}, PRIMARY KEY ("diaSourceId"))'
            )
            cur.execute(
                f'CREATE INDEX IF NOT EXISTS "Alert_visit" ON {s}."Alert" (visit, detector)'
            )
            cur.execute(
                f"CREATE OR REPLACE FUNCTION {s}.alert_refuse() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
                "'Alert archive is append-only: % refused', TG_OP; END $$"
            )
            for name, when, level in (
                ("Alert_no_update", "UPDATE", "ROW"),
                ("Alert_no_delete", "DELETE", "ROW"),
                ("Alert_no_truncate", "TRUNCATE", "STATEMENT"),
            ):
                cur.execute(
                    f'CREATE OR REPLACE TRIGGER "{name}" BEFORE {when} ON {s}."Alert" '
                    f"FOR EACH {level} EXECUTE FUNCTION {s}.alert_refuse()"
                )
            cur.execute(f'REVOKE UPDATE, DELETE, TRUNCATE ON {s}."Alert" FROM PUBLIC')

    def append(self, alerts: list[ArchivedAlert]) -> int:
        """Add packets in one transaction; returns how many were new.

        Rows go through a temporary table: ``INSERT ... ON CONFLICT DO NOTHING`` adds the new
        ones, then any id whose archived bytes differ aborts the whole append.

        Raises
        ------
        ArchiveConflictError
            An id already archived (or repeated in ``alerts``) with other bytes; nothing is
            written.
        """
        todo = _dedupe(alerts)
        if not todo:
            return 0
        types = [COPY_TYPES[c.datatype] for c in table_spec("Alert").columns]
        with self._s.cursor(f"archiving {len(todo)} alerts", write=True) as cur:
            cur.execute(
                'CREATE TEMP TABLE IF NOT EXISTS alert_in (LIKE "Alert") ON COMMIT DELETE ROWS'
            )
            with cur.copy(f"COPY alert_in ({_COLS}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(types)
                for a in todo.values():
                    cp.write_row(_common.alert_row(a))
            cur.execute('INSERT INTO "Alert" SELECT * FROM alert_in ON CONFLICT DO NOTHING')
            added = cur.rowcount
            cur.execute(
                'SELECT i."diaSourceId" FROM alert_in AS i JOIN "Alert" AS a '
                'USING ("diaSourceId") WHERE a.payload <> i.payload ORDER BY 1'
            )
            bad = [int(r[0]) for r in cur.fetchall()]
            if bad:
                raise _conflict(bad)
        return int(added)

    def _read(self, where: str, params: tuple[object, ...]) -> list[ArchivedAlert]:
        with self._s.cursor("reading the alert archive") as cur:
            cur.execute(f'SELECT {_COLS} FROM "Alert" {where}', params)
            return [_common.archived_alert(tuple(r)) for r in cur.fetchall()]

    def get(self, dia_source_id: int) -> ArchivedAlert | None:
        """One archived packet, or None."""
        rows = self._read('WHERE "diaSourceId" = %s', (int(dia_source_id),))
        return rows[0] if rows else None

    def for_visit(self, visit: int, detector: int) -> list[ArchivedAlert]:
        """The packets of one visit-detector, ordered by diaSourceId."""
        return self._read(
            'WHERE visit = %s AND detector = %s ORDER BY "diaSourceId"', (int(visit), int(detector))
        )

    def count(self) -> int:
        """Number of archived packets."""
        with self._s.cursor("counting alerts") as cur:
            cur.execute('SELECT count(*) FROM "Alert"')
            return int(cur.fetchone()[0])  # type: ignore[index]

    def close(self) -> None:
        """Close the session (idempotent)."""
        self._s.close()
