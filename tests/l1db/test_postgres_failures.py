"""PostgreSQL going away: DatabaseUnavailableError, nothing half written, the next call works."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest
from l1db_support import open_backend, synthetic_visit

from diaflow.errors import DatabaseUnavailableError
from diaflow.l1db import PostgresL1Database

pytestmark = pytest.mark.postgres


def _terminate(dsn: str, pid: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_dropped_connection_raises_then_reconnects(pg_dsn: str, pg_schema: str) -> None:
    db = open_backend("postgres", pg_schema)
    assert isinstance(db, PostgresL1Database)
    p = synthetic_visit(
        visit=1, mjd=6e4, ra=1.0, dec=1.0, rng=np.random.default_rng(0), generation=3
    )
    _terminate(pg_dsn, db.backend_pid)
    with pytest.raises(DatabaseUnavailableError, match="retry"):
        db.store_visit(p)
    assert not db.has_visit(1, 0)  # reconnected
    db.store_visit(p)
    assert db.count("DiaSource") == 20
    db.close()


def test_server_gone_mid_visit_writes_nothing(pg_dsn: str, pg_schema: str) -> None:
    """The store is cut off while waiting on a lock after its DiaSources were copied."""
    db = open_backend("postgres", pg_schema)
    assert isinstance(db, PostgresL1Database)
    pid = db.backend_pid
    p = synthetic_visit(
        visit=2, mjd=6e4, ra=1.0, dec=1.0, rng=np.random.default_rng(1), generation=3
    )
    errors: list[BaseException] = []

    def store() -> None:
        try:
            db.store_visit(p)
        except BaseException as exc:
            errors.append(exc)

    with psycopg.connect(pg_dsn) as blocker:
        blocker.execute(f'LOCK TABLE {pg_schema}."Outbox" IN ACCESS EXCLUSIVE MODE')
        t = threading.Thread(target=store)
        t.start()
        with psycopg.connect(pg_dsn, autocommit=True) as watch:
            for _ in range(500):
                row = watch.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
                if row and row[0] == "Lock":
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the store never waited on the Outbox lock")
            watch.execute("SELECT pg_terminate_backend(%s)", (pid,))
        t.join(30)
        blocker.rollback()
    assert len(errors) == 1
    assert isinstance(errors[0], DatabaseUnavailableError)
    with open_backend("postgres", pg_schema, readonly=True) as ro:
        assert not ro.has_visit(2, 0)
        assert ro.count("DiaSource") == 0
        assert ro.count("DiaObject") == 0
    db.close()


def test_an_unreachable_server_is_unavailable() -> None:
    with pytest.raises(DatabaseUnavailableError, match="PostgreSQL unavailable"):
        PostgresL1Database(
            "host=127.0.0.1 port=1 user=postgres dbname=test connect_timeout=2",
            schema="nowhere",
            generation_name="G",
            generation_number=1,
        )
