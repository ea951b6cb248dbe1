"""Backends for the l1db tests: SQLite in a temporary directory, PostgreSQL in a throw-away
schema of the server at 127.0.0.1:5432 (skipped, saying so, when it cannot be reached)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from diaflow.l1db import L1Database, PostgresL1Database, SqliteL1Database

PG_DSN = os.environ.get(
    "DIAFLOW_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
)


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_DSN):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


_PG_PROBLEM = _pg_reachable()


def drop_schemas(*schemas: str) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for s in schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")


@pytest.fixture
def pg_dsn() -> str:
    if _PG_PROBLEM is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable ({_PG_PROBLEM})")
    return PG_DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A unique schema name for one test, dropped afterwards."""
    name = f"t_l1db_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schemas(name)


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def open_backend(
    backend: str, where: str | Path, *, readonly: bool = False, generation: int = 3
) -> L1Database:
    """Open the same database again (``where``: SQLite file or PostgreSQL schema)."""
    if backend == "sqlite":
        return SqliteL1Database(
            where,
            generation_name=f"G{generation}",
            generation_number=generation,
            readonly=readonly,
        )
    return PostgresL1Database(
        PG_DSN,
        schema=str(where),
        generation_name=f"G{generation}",
        generation_number=generation,
        readonly=readonly,
    )


@pytest.fixture(params=BACKENDS)
def backend_where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | Path]:
    """(backend, location) of a fresh, not yet created database."""
    if request.param == "sqlite":
        return "sqlite", tmp_path / "G3.sqlite3"
    return "postgres", request.getfixturevalue("pg_schema")


@pytest.fixture
def db(backend_where: tuple[str, str | Path]) -> Iterator[L1Database]:
    backend, where = backend_where
    d = open_backend(backend, where)
    yield d
    d.close()
