"""Backends for the l1db tests: SQLite in a temporary directory, PostgreSQL in a throw-away
schema of the server at 127.0.0.1:5432 (skipped, saying so, when it cannot be reached)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from l1db_support import BACKENDS, PG_DSN, PG_PROBLEM, drop_schemas, open_backend

from diaflow.l1db import L1Database


@pytest.fixture
def pg_dsn() -> str:
    if PG_PROBLEM is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable ({PG_PROBLEM})")
    return PG_DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A unique schema name for one test, dropped afterwards."""
    name = f"t_l1db_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schemas(name)


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
