"""PostgreSQL plumbing shared by the L1 database and the alert archive: connections that come
back after the server went away, and psycopg errors translated to diaflow's."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from ..errors import ConfigError, DatabaseError, DatabaseUnavailableError, DiaflowError

CONNECT_TIMEOUT_S = 10
"""How long a connection attempt waits for the server."""

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

SQL_TYPES = {
    "long": "bigint",
    "int": "integer",
    "short": "smallint",
    "boolean": "boolean",
    "float": "real",
    "double": "double precision",
    "char": "text",
    "string": "text",
    "text": "text",
    "binary": "bytea",
}
COPY_TYPES = {
    "long": "int8",
    "int": "int4",
    "short": "int2",
    "boolean": "bool",
    "float": "float4",
    "double": "float8",
    "char": "text",
    "string": "text",
    "text": "text",
    "binary": "bytea",
}


def q(name: str) -> str:
    """A quoted SQL identifier (APDB names are mixed case)."""
    return '"' + name.replace('"', '""') + '"'


def check_schema_name(schema: str) -> str:
    """A schema name that needs no quoting: lower case letters, digits and underscores."""
    if not _IDENT.match(schema):
        raise ConfigError(
            f"PostgreSQL schema {schema!r}: use 1-63 lower-case letters, digits and underscores, "
            "starting with a letter"
        )
    return schema


def translate(exc: psycopg.Error, what: str) -> DatabaseError:
    """A psycopg error as a diaflow one: lost or refused connections can be retried."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseUnavailableError(
            f"{what}: PostgreSQL unavailable ({text}); nothing is half written (a transaction "
            "commits whole or not at all), retry later"
        )
    return DatabaseError(f"{what}: {text}; the transaction was rolled back")


class Session:
    """One connection with a fixed ``search_path``, reopened after the server drops it.

    All statements run in autocommit mode unless inside :meth:`transaction`; a single
    statement therefore reads one committed snapshot.
    """

    def __init__(self, dsn: str, *, search_path: str, readonly: bool) -> None:
        self.dsn = dsn
        self.search_path = search_path
        self.readonly = readonly
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise DatabaseError("the database was closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name=f"diaflow {self.search_path}"[:63],
            )
            conn.execute(f"SET search_path TO {self.search_path}")
            # q3c cone searches are expanded into ipix ranges at planning time: a generic plan
            # of a prepared statement would lose them (and partition pruning) and scan.
            conn.execute("SET plan_cache_mode = force_custom_plan")
            if self.readonly:
                conn.execute("SET default_transaction_read_only = on")
            self._conn = conn
        return self._conn

    @contextmanager
    def cursor(self, what: str, *, write: bool = False) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor, inside one transaction when ``write``; errors become diaflow errors."""
        if write and self.readonly:
            raise DatabaseError(f"{what} needs a writer; this connection is read-only")
        with self._lock:
            try:
                conn = self._connection()
                if write:
                    with conn.transaction(), conn.cursor() as cur:
                        yield cur
                else:
                    with conn.cursor(binary=True) as cur:
                        yield cur
            except DiaflowError:
                raise
            except psycopg.Error as exc:
                raise translate(exc, what) from exc

    @property
    def backend_pid(self) -> int:
        """Server process id of the current connection (tests use it to cut the connection)."""
        with self._lock:
            return int(self._connection().info.backend_pid)

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def advisory_lock(cur: psycopg.Cursor[Any], key: str) -> None:
    """Serialize DDL between processes for the rest of the transaction."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))


def connect_check(dsn: str) -> None:
    """Raise DatabaseUnavailableError when the server cannot be reached."""
    try:
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S):
            pass
    except psycopg.Error as exc:
        raise translate(exc, f"connecting to {dsn!r}") from exc
