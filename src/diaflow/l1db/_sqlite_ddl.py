"""SQLite table definitions (STRICT tables, zone column, indexes), error translation and a
read-only metadata peek, shared by the L1 database and the alert archive."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from ..errors import DatabaseError, DatabaseUnavailableError
from ._zones import ZONE_HEIGHT_DEG, zone_of
from .schema import Column, TableSpec

_SQL_TYPES = {
    "long": "INTEGER",
    "int": "INTEGER",
    "short": "INTEGER",
    "boolean": "INTEGER",
    "float": "REAL",
    "double": "REAL",
    "char": "TEXT",
    "string": "TEXT",
    "text": "TEXT",
    "binary": "BLOB",
}
_INDEXES = {
    "DiaObjectLast": [("zone", "ra")],
    "DiaSource": [
        ("zone", "ra", "midpointMjdTai"),
        ("visit", "detector"),
        ("diaObjectId",),
    ],
    # No (visit, detector) index: a visit-detector's rows are one range of ids (l1db.ids).
    "DiaForcedSource": [("zone", "ra", "midpointMjdTai")],
    "SSSource": [("ssObjectId",)],
    "Outbox": [("visit", "detector")],
}


def quote_ident(name: str) -> str:
    """A quoted SQL identifier (APDB names are mixed case)."""
    return '"' + name.replace('"', '""') + '"'


_q = quote_ident


def _column_sql(c: Column) -> str:
    return f"{_q(c.name)} {_SQL_TYPES[c.datatype]}" + ("" if c.nullable else " NOT NULL")


def create_table_sql(spec: TableSpec, zone_height_deg: float = ZONE_HEIGHT_DEG) -> list[str]:
    """``CREATE TABLE`` (STRICT) and ``CREATE INDEX`` statements of one table.

    A spatial table gets a stored generated column ``zone``, computed by SQLite with the same
    IEEE arithmetic as :func:`~diaflow.l1db._zones.zone_of`.
    """
    cols = [_column_sql(c) for c in spec.columns]
    if spec.spatial:
        top = int(zone_of(90.0, zone_height_deg))
        expr = f'min(CAST(("dec" + 90.0) / {zone_height_deg!r} AS INTEGER), {top})'
        cols.append(f"zone INTEGER GENERATED ALWAYS AS ({expr}) STORED")
    cols.append(f"PRIMARY KEY ({', '.join(map(_q, spec.primary_key))})")
    stmts = [f"CREATE TABLE IF NOT EXISTS {_q(spec.name)} ({', '.join(cols)}) STRICT"]
    for cols_ in _INDEXES.get(spec.name, []):
        name = f"idx_{spec.name}_{'_'.join(cols_)}"
        on = ", ".join(map(_q, cols_))
        stmts.append(f"CREATE INDEX IF NOT EXISTS {_q(name)} ON {_q(spec.name)} ({on})")
    return stmts


def translate_error(exc: sqlite3.Error, what: str) -> DatabaseError:
    """A sqlite3 error as a diaflow one: busy or locked databases can be retried."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and any(
        k in text for k in ("locked", "busy", "unable to open", "disk I/O")
    ):
        return DatabaseUnavailableError(f"{what}: {text}; nothing was written, retry later")
    return DatabaseError(f"{what}: {text}; the transaction was rolled back")


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata table of a database file, read-only ({} when it is not an L1 database)."""
    uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error:
        return {}
    try:
        return dict(conn.execute('SELECT name, value FROM "metadata"').fetchall())
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
