"""Which Level 1 database to open: backend, location, and the generations it holds.

Exactly one generation is *current* at any moment (DESIGN.md, rule 2). Where that is recorded:

- SQLite: ``<path>/<generation>.sqlite3`` per generation, ``<path>/alerts.sqlite3`` for the
  alert archive, and ``<path>/CURRENT``, a JSON ``{"name": ..., "number": ...}`` replaced
  atomically (write a temporary file, fsync, ``os.replace``), so a reader sees the old pointer
  or the new one, never a torn one.
- PostgreSQL: a schema per generation (``l1_<name>``), the archive in ``diaflow_alerts``, and a
  registry table ``diaflow_registry.generation(name, number, schema_name, created,
  is_current)`` with at most one current row (a partial unique index).

When nothing exists yet, generation ``L1-0`` (number 0) is created and made current.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from ._pg import Session, advisory_lock, check_schema_name
from .api import AlertArchive, L1Database
from .archive import PostgresAlertArchive, SqliteAlertArchive
from .ids import MAX_GENERATION
from .postgres import PostgresL1Database
from .sqlite import SqliteL1Database, read_metadata

__all__ = [
    "FIRST_GENERATION",
    "Generation",
    "L1DbConfig",
    "create_generation",
    "current_generation",
    "generations",
    "open_archive",
    "open_l1db",
]

FIRST_GENERATION = ("L1-0", 0)
"""Name and number of the generation made when a survey starts."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")


@dataclass(frozen=True, kw_only=True)
class L1DbConfig:
    """Where the Level 1 database lives."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    """``sqlite`` (one laptop, the default) or ``postgres`` (scale-out)."""
    path: Path = Path("l1db")
    """SQLite: the directory holding the generation files, ``alerts.sqlite3`` and ``CURRENT``."""
    dsn: str = ""
    """PostgreSQL: libpq connection string, e.g. ``host=127.0.0.1 user=postgres dbname=l1``."""
    generation: str | None = None
    """Generation to open by name; None for the current one."""
    pg_prefix: str = ""
    """PostgreSQL: prefix of every schema diaflow creates, so several surveys (or test runs)
    can share one database."""

    def __post_init__(self) -> None:
        if self.backend not in ("sqlite", "postgres"):
            raise ConfigError(f"backend must be 'sqlite' or 'postgres', got {self.backend!r}")
        if self.backend == "postgres" and not self.dsn:
            raise ConfigError("backend 'postgres' needs a dsn, e.g. 'host=127.0.0.1 dbname=l1'")
        if self.generation is not None:
            _check_name(self.generation)
        if self.pg_prefix:
            check_schema_name(self.pg_prefix + "x")
        object.__setattr__(self, "path", Path(self.path))


@dataclass(frozen=True)
class Generation:
    """One generation of the Level 1 database."""

    name: str
    number: int
    """Packed into every id the generation makes (0..31)."""
    location: str
    """SQLite file or PostgreSQL schema."""
    is_current: bool = False


def _check_name(name: str) -> str:
    if not _NAME.match(name) or name.lower() == "alerts":
        raise ConfigError(
            f"generation name {name!r}: use up to 48 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (and not 'alerts')"
        )
    return name


def _check_number(number: int) -> int:
    if not 0 <= number <= MAX_GENERATION:
        raise ConfigError(f"generation number {number} is outside 0..{MAX_GENERATION}")
    return number


# ---- SQLite ----------------------------------------------------------------------------------
def _sqlite_file(config: L1DbConfig, name: str) -> Path:
    return config.path / f"{_check_name(name)}.sqlite3"


def _read_pointer(config: L1DbConfig) -> tuple[str, int] | None:
    try:
        data = json.loads((config.path / "CURRENT").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{config.path / 'CURRENT'} is unreadable: {exc}") from exc
    return str(data["name"]), int(data["number"])


def _write_pointer(config: L1DbConfig, name: str, number: int) -> None:
    """Replace CURRENT atomically and durably."""
    tmp = config.path / f".CURRENT.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"name": name, "number": number}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, config.path / "CURRENT")
    fd = os.open(config.path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sqlite_generations(config: L1DbConfig) -> list[Generation]:
    current = _read_pointer(config)
    out = []
    for f in sorted(config.path.glob("*.sqlite3")):
        if f.name == "alerts.sqlite3":
            continue
        meta = read_metadata(f)
        if "generation_name" not in meta:
            continue
        name, number = meta["generation_name"], int(meta["generation_number"])
        out.append(Generation(name, number, str(f), current == (name, number)))
    return out


# ---- PostgreSQL ------------------------------------------------------------------------------
def _registry(config: L1DbConfig) -> str:
    return f"{config.pg_prefix}diaflow_registry"


def _pg_schema(config: L1DbConfig, name: str) -> str:
    return check_schema_name(
        config.pg_prefix + "l1_" + re.sub(r"[^a-z0-9]", "_", _check_name(name).lower())
    )


def _pg_session(config: L1DbConfig) -> Session:
    reg = _registry(config)
    s = Session(config.dsn, search_path=f"{reg}, public", readonly=False)
    with s.cursor("creating the generation registry", write=True) as cur:
        advisory_lock(cur, "diaflow-create")
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {reg}")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {reg}.generation (name text PRIMARY KEY, "
            "number integer NOT NULL UNIQUE, schema_name text NOT NULL UNIQUE, "
            "created timestamptz NOT NULL DEFAULT now(), is_current boolean NOT NULL "
            "DEFAULT false)"
        )
        cur.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS generation_one_current ON {reg}.generation "
            "(is_current) WHERE is_current"
        )
    return s


def _pg_generations(config: L1DbConfig) -> list[Generation]:
    s = _pg_session(config)
    try:
        with s.cursor("reading the generation registry") as cur:
            cur.execute(
                f"SELECT name, number, schema_name, is_current FROM {_registry(config)}.generation "
                "ORDER BY number"
            )
            return [Generation(r[0], int(r[1]), r[2], bool(r[3])) for r in cur.fetchall()]
    finally:
        s.close()


# ---- public ----------------------------------------------------------------------------------
def generations(config: L1DbConfig) -> list[Generation]:
    """Every generation that exists, by number."""
    if config.backend == "postgres":
        return _pg_generations(config)
    if not config.path.is_dir():
        return []
    return sorted(_sqlite_generations(config), key=lambda g: g.number)


def create_generation(config: L1DbConfig, name: str, number: int) -> Generation:
    """Create an empty generation (tables and indexes); it does not become current.

    Raises
    ------
    ConfigError
        The name or the number is taken, or invalid.
    """
    _check_name(name)
    _check_number(number)
    for g in generations(config):
        if g.name == name or g.number == number:
            raise ConfigError(
                f"generation {name!r} number {number}: {g.name!r} number {g.number} exists; "
                "every generation needs its own name and id number"
            )
    if config.backend == "sqlite":
        config.path.mkdir(parents=True, exist_ok=True)
        f = _sqlite_file(config, name)
        SqliteL1Database(f, generation_name=name, generation_number=number).close()
        return Generation(name, number, str(f))
    schema = _pg_schema(config, name)
    PostgresL1Database(
        config.dsn, schema=schema, generation_name=name, generation_number=number
    ).close()
    s = _pg_session(config)
    try:
        with s.cursor(f"registering generation {name}", write=True) as cur:
            cur.execute(
                f"INSERT INTO {_registry(config)}.generation (name, number, schema_name) "
                "VALUES (%s, %s, %s)",
                (name, number, schema),
            )
    finally:
        s.close()
    return Generation(name, number, schema)


def _make_current(config: L1DbConfig, g: Generation) -> None:
    if config.backend == "sqlite":
        _write_pointer(config, g.name, g.number)
        return
    s = _pg_session(config)
    try:
        with s.cursor(f"making {g.name} current", write=True) as cur:
            reg = _registry(config)
            cur.execute(f"UPDATE {reg}.generation SET is_current = false WHERE is_current")
            cur.execute(f"UPDATE {reg}.generation SET is_current = true WHERE name = %s", (g.name,))
    finally:
        s.close()


def current_generation(config: L1DbConfig, *, create: bool = True) -> Generation:
    """The current generation; when none exists, ``L1-0`` is created and made current.

    Raises
    ------
    ConfigError
        None exists and ``create`` is False.
    """
    if config.backend == "sqlite":
        pointer = _read_pointer(config)
        if pointer is not None:
            f = _sqlite_file(config, pointer[0])
            return Generation(pointer[0], pointer[1], str(f), is_current=True)
    else:
        for g in _pg_generations(config):
            if g.is_current:
                return g
    if not create:
        raise ConfigError(f"no current L1 generation in {_where(config)}; run the night first")
    existing = {g.name: g for g in generations(config)}
    name, number = FIRST_GENERATION
    g = existing.get(name) or create_generation(config, name, number)
    _make_current(config, g)
    return Generation(g.name, g.number, g.location, is_current=True)


def _where(config: L1DbConfig) -> str:
    return str(config.path) if config.backend == "sqlite" else f"{config.dsn!r}"


def open_l1db(config: L1DbConfig, *, readonly: bool = False) -> L1Database:
    """Open a generation: ``config.generation`` by name, else the current one.

    A read-only open never creates anything.
    """
    if config.generation is None:
        g = current_generation(config, create=not readonly)
    else:
        found = [g for g in generations(config) if g.name == config.generation]
        if not found:
            raise ConfigError(f"no generation {config.generation!r} in {_where(config)}")
        g = found[0]
    if config.backend == "sqlite":
        return SqliteL1Database(
            g.location, generation_name=g.name, generation_number=g.number, readonly=readonly
        )
    return PostgresL1Database(
        config.dsn,
        schema=g.location,
        generation_name=g.name,
        generation_number=g.number,
        readonly=readonly,
    )


def open_archive(config: L1DbConfig) -> AlertArchive:
    """Open (creating if needed) the Alert archive, which lives outside every generation."""
    if config.backend == "sqlite":
        return SqliteAlertArchive(config.path / "alerts.sqlite3")
    return PostgresAlertArchive(config.dsn, schema=f"{config.pg_prefix}diaflow_alerts")
