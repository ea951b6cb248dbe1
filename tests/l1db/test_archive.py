"""The Alert archive is append-only, enforced by the database itself (raw SQL bypassing our API
is refused too), on both backends."""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from l1db_support import PG_DSN, drop_schemas

from diaflow.errors import ArchiveConflictError
from diaflow.l1db import AlertArchive, ArchivedAlert, PostgresAlertArchive, SqliteAlertArchive


def _alert(i: int, payload: bytes = b"", visit: int = 5) -> ArchivedAlert:
    return ArchivedAlert(
        diaSourceId=i,
        visit=visit,
        detector=1,
        payload=payload or b"\x00\x00\x00\x04\x4b" + i.to_bytes(8, "little"),
        schema_id=1101,
        software_version="diaflow 0.1",
        generation="L1-0",
        issuedMjdTai=60300.5,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AlertArchive]:
    if request.param == "sqlite":
        a: AlertArchive = SqliteAlertArchive(tmp_path / "alerts.sqlite3")
        yield a
        a.close()
        return
    request.getfixturevalue("pg_dsn")
    schema = f"t_alerts_{uuid.uuid4().hex[:12]}"
    a = PostgresAlertArchive(PG_DSN, schema=schema)
    yield a
    a.close()
    drop_schemas(schema)


def test_append_get_for_visit(archive: AlertArchive) -> None:
    alerts = [_alert(i) for i in (30, 10, 20)] + [_alert(40, visit=6)]
    assert archive.append(alerts) == 4
    assert archive.count() == 4
    assert archive.get(10) == alerts[1]
    assert archive.get(11) is None
    assert [a.diaSourceId for a in archive.for_visit(5, 1)] == [10, 20, 30]
    assert archive.for_visit(5, 1)[0].payload == alerts[1].payload


def test_identical_reappend_is_skipped(archive: AlertArchive) -> None:
    archive.append([_alert(1), _alert(2)])
    assert archive.append([_alert(1), _alert(2), _alert(3)]) == 1  # a retry after a crash
    assert archive.append([]) == 0
    assert archive.count() == 3


def test_different_bytes_conflict_and_nothing_is_written(archive: AlertArchive) -> None:
    archive.append([_alert(1)])
    with pytest.raises(ArchiveConflictError, match=r"different bytes \(first: \[1\]\)"):
        archive.append([_alert(2), _alert(1, payload=b"other bytes")])
    assert archive.count() == 1
    assert archive.get(1) == _alert(1)
    with pytest.raises(ArchiveConflictError, match="twice"):
        archive.append([_alert(5), _alert(5, payload=b"x")])
    assert archive.get(5) is None


def _sqlite_raw(path: Path, recursive_triggers: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA recursive_triggers = {'ON' if recursive_triggers else 'OFF'}")
    return conn


@pytest.mark.parametrize("recursive_triggers", [True, False])
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE Alert SET payload = x'00' WHERE diaSourceId = 1",
        "UPDATE Alert SET generation = 'forged'",
        "DELETE FROM Alert WHERE diaSourceId = 1",
        "DELETE FROM Alert",
        "INSERT OR REPLACE INTO Alert VALUES (1, 5, 1, x'00', 1101, 'v', 'L1-0', 1.0)",
        "REPLACE INTO Alert VALUES (1, 5, 1, x'00', 1101, 'v', 'L1-0', 1.0)",
        "INSERT INTO Alert VALUES (1, 5, 1, x'00', 1101, 'v', 'L1-0', 1.0) "
        "ON CONFLICT (diaSourceId) DO UPDATE SET payload = excluded.payload",
    ],
)
def test_sqlite_refuses_every_change_in_raw_sql(
    tmp_path: Path, sql: str, recursive_triggers: bool
) -> None:
    path = tmp_path / "alerts.sqlite3"
    with SqliteAlertArchive(path) as a:
        a.append([_alert(1), _alert(2)])
    conn = _sqlite_raw(path, recursive_triggers)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute(sql)
    rows = conn.execute("SELECT diaSourceId, payload FROM Alert ORDER BY 1").fetchall()
    conn.close()
    assert rows == [(1, _alert(1).payload), (2, _alert(2).payload)]


def test_sqlite_archive_still_takes_new_rows_in_raw_sql(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite3"
    SqliteAlertArchive(path).close()
    conn = _sqlite_raw(path, True)
    conn.execute("INSERT INTO Alert VALUES (9, 5, 1, x'01', 1101, 'v', 'L1-0', 1.0)")
    conn.close()
    with SqliteAlertArchive(path) as a:
        assert a.get(9) == dataclasses.replace(
            _alert(9), payload=b"\x01", software_version="v", issuedMjdTai=1.0
        )


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        'UPDATE {s}."Alert" SET payload = \'\\x00\' WHERE "diaSourceId" = 1',
        'DELETE FROM {s}."Alert" WHERE "diaSourceId" = 1',
        'DELETE FROM {s}."Alert"',
        'TRUNCATE {s}."Alert"',
        "INSERT INTO {s}.\"Alert\" VALUES (1, 5, 1, '\\x00', 1101, 'v', 'L1-0', 1.0) "
        'ON CONFLICT ("diaSourceId") DO UPDATE SET payload = excluded.payload',
    ],
)
def test_postgres_refuses_every_change_in_raw_sql(pg_dsn: str, sql: str) -> None:
    schema = f"t_alerts_{uuid.uuid4().hex[:12]}"
    try:
        with PostgresAlertArchive(pg_dsn, schema=schema) as a:
            a.append([_alert(1), _alert(2)])
        # As the table's owner (a superuser even): the triggers still refuse.
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(sql.format(s=schema))
            rows = conn.execute(
                f'SELECT "diaSourceId", payload FROM {schema}."Alert" ORDER BY 1'
            ).fetchall()
            assert rows == [(1, _alert(1).payload), (2, _alert(2).payload)]
            grants = conn.execute(
                "SELECT privilege_type FROM information_schema.role_table_grants "
                "WHERE table_schema = %s AND grantee = 'PUBLIC'",
                (schema,),
            ).fetchall()
            assert not {r[0] for r in grants} & {"UPDATE", "DELETE", "TRUNCATE"}
    finally:
        drop_schemas(schema)


@pytest.mark.postgres
def test_postgres_privileges_refuse_an_ordinary_role(pg_dsn: str) -> None:
    """A role that was granted INSERT and SELECT only is refused UPDATE/DELETE by privilege."""
    schema = f"t_alerts_{uuid.uuid4().hex[:12]}"
    role = f"t_writer_{uuid.uuid4().hex[:8]}"
    try:
        with PostgresAlertArchive(pg_dsn, schema=schema) as a:
            a.append([_alert(1)])
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role}")
            conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            conn.execute(f'GRANT SELECT, INSERT ON {schema}."Alert" TO {role}')
            with conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                conn.execute(
                    f"INSERT INTO {schema}.\"Alert\" VALUES (2, 5, 1, '\\x00', 1, 'v', 'g', 1.0)"
                )
            for sql in (f'DELETE FROM {schema}."Alert"', f'UPDATE {schema}."Alert" SET visit = 0'):
                with conn.transaction():
                    conn.execute(f"SET LOCAL ROLE {role}")
                    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                        conn.execute(sql)
            assert conn.execute(f'SELECT count(*) FROM {schema}."Alert"').fetchone() == (2,)
    finally:
        drop_schemas(schema)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
