"""Configuration and generations: files and CURRENT pointer on SQLite, schemas and a registry on
PostgreSQL."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from l1db_support import drop_schemas, synthetic_visit

from diaflow.errors import ConfigError
from diaflow.l1db import (
    L1DbConfig,
    PostgresL1Database,
    SqliteAlertArchive,
    SqliteL1Database,
    create_generation,
    current_generation,
    generations,
    open_archive,
    open_l1db,
)
from diaflow.l1db.config import _read_pointer, _write_pointer


def test_first_open_creates_l1_0_and_makes_it_current(tmp_path: Path) -> None:
    cfg = L1DbConfig(path=tmp_path / "l1")
    with open_l1db(cfg) as db:
        assert isinstance(db, SqliteL1Database)
        assert (db.generation_name, db.generation_number) == ("L1-0", 0)
    assert json.loads((tmp_path / "l1" / "CURRENT").read_text()) == {"name": "L1-0", "number": 0}
    assert (tmp_path / "l1" / "L1-0.sqlite3").is_file()
    (g,) = generations(cfg)
    assert (g.name, g.number, g.is_current) == ("L1-0", 0, True)
    with open_archive(cfg) as archive:
        assert isinstance(archive, SqliteAlertArchive)
        assert archive.path == tmp_path / "l1" / "alerts.sqlite3"


def test_a_new_generation_is_not_current_until_swapped(tmp_path: Path) -> None:
    cfg = L1DbConfig(path=tmp_path)
    assert current_generation(cfg).name == "L1-0"
    g = create_generation(cfg, "DR1-L1", 1)
    assert not g.is_current
    assert current_generation(cfg).name == "L1-0"
    with open_l1db(L1DbConfig(path=tmp_path, generation="DR1-L1")) as db:
        assert db.generation_number == 1
        db.store_visit(
            synthetic_visit(
                visit=1, mjd=6e4, ra=1, dec=1, rng=np.random.default_rng(0), generation=1
            )
        )
    with open_l1db(cfg, readonly=True) as cur:
        assert cur.generation_name == "L1-0"
        assert cur.count("DiaSource") == 0  # the other generation's rows are elsewhere
    assert [x.name for x in generations(cfg)] == ["L1-0", "DR1-L1"]
    with pytest.raises(ConfigError, match="exists"):
        create_generation(cfg, "DR2-L1", 1)
    with pytest.raises(ConfigError, match="exists"):
        create_generation(cfg, "DR1-L1", 2)
    with pytest.raises(ConfigError, match=r"outside 0\.\.31"):
        create_generation(cfg, "DR9-L1", 32)


def test_readonly_open_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no current L1 generation"):
        open_l1db(L1DbConfig(path=tmp_path), readonly=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="no generation 'DR1-L1'"):
        open_l1db(L1DbConfig(path=tmp_path, generation="DR1-L1"))


def test_a_file_opened_as_another_generation_is_refused(tmp_path: Path) -> None:
    SqliteL1Database(tmp_path / "a.sqlite3", generation_name="A", generation_number=1).close()
    with pytest.raises(ConfigError, match="generation_name='A'"):
        SqliteL1Database(tmp_path / "a.sqlite3", generation_name="B", generation_number=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "mysql"}, "backend must be"),
        ({"backend": "postgres"}, "needs a dsn"),
        ({"generation": "../etc"}, "generation name"),
        ({"generation": "alerts"}, "not 'alerts'"),
        ({"pg_prefix": "Bad-Prefix"}, "lower-case"),
    ],
)
def test_bad_configs_are_refused(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        L1DbConfig(**kwargs)  # type: ignore[arg-type]


def test_the_pointer_is_never_seen_torn(tmp_path: Path) -> None:
    cfg = L1DbConfig(path=tmp_path)
    _write_pointer(cfg, "L1-0", 0)
    seen: set[tuple[str, int]] = set()
    errors: list[Exception] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                p = _read_pointer(cfg)
                assert p is not None
                seen.add(p)
            except Exception as exc:
                errors.append(exc)

    t = threading.Thread(target=read)
    t.start()
    for i in range(100):
        _write_pointer(cfg, *(("DR1-L1", 1) if i % 2 else ("L1-0", 0)))
    stop.set()
    t.join()
    assert errors == []
    assert seen <= {("L1-0", 0), ("DR1-L1", 1)}
    assert [p.name for p in tmp_path.iterdir()] == ["CURRENT"]  # no temporary file left


@pytest.fixture
def pg_config(pg_dsn: str) -> Iterator[L1DbConfig]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    yield L1DbConfig(backend="postgres", dsn=pg_dsn, pg_prefix=prefix)
    drop_schemas(
        *(prefix + s for s in ("diaflow_registry", "diaflow_alerts", "l1_l1_0", "l1_dr1_l1"))
    )


@pytest.mark.postgres
def test_postgres_generations_live_in_schemas_with_a_registry(pg_config: L1DbConfig) -> None:
    with open_l1db(pg_config) as db:
        assert isinstance(db, PostgresL1Database)
        assert db.schema == f"{pg_config.pg_prefix}l1_l1_0"
        assert db.generation_name == "L1-0"
    create_generation(pg_config, "DR1-L1", 1)
    gens = generations(pg_config)
    assert [(g.name, g.number, g.location, g.is_current) for g in gens] == [
        ("L1-0", 0, f"{pg_config.pg_prefix}l1_l1_0", True),
        ("DR1-L1", 1, f"{pg_config.pg_prefix}l1_dr1_l1", False),
    ]
    assert current_generation(pg_config).name == "L1-0"
    with open_l1db(
        L1DbConfig(
            backend="postgres",
            dsn=pg_config.dsn,
            generation="DR1-L1",
            pg_prefix=pg_config.pg_prefix,
        ),
        readonly=True,
    ) as db:
        assert db.generation_number == 1
    with pytest.raises(ConfigError, match="exists"):
        create_generation(pg_config, "DR1-L1", 5)
    with open_archive(pg_config) as archive:
        assert archive.count() == 0
