"""Synthetic Level 1 rows for the backend tests: complete APDB rows, without images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from diaflow.l1db import PostgresL1Database, SqliteL1Database
from diaflow.l1db.api import ArchivedAlert, L1Database, Provenance, VisitProducts, VisitRecord
from diaflow.l1db.ids import make_ids
from diaflow.l1db.schema import coerce, table_spec

PROVENANCE = Provenance("diaflow-test 0.1", "cfg0123", "templates-v1")


# ---- backends -------------------------------------------------------------------------------
PG_DSN = os.environ.get(
    "DIAFLOW_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
)


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_DSN):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


PG_PROBLEM = _pg_reachable()
"""Why PostgreSQL cannot be used, or None."""


def drop_schemas(*schemas: str) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for s in schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")


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


def random_columns(table: str, n: int, rng: np.random.Generator) -> dict[str, Any]:
    """Every column of a table filled with random values of its type (some NULLs)."""
    data: dict[str, Any] = {}
    for col in table_spec(table).columns:
        if col.datatype in ("float", "double"):
            v = rng.normal(100.0, 30.0, n)
            if col.nullable:
                v[rng.random(n) < 0.1] = np.nan
            data[col.name] = v
        elif col.datatype == "boolean":
            data[col.name] = rng.random(n) < 0.3
        elif col.datatype in ("long", "int", "short"):
            data[col.name] = rng.integers(0, 100, n)
        else:
            data[col.name] = rng.choice(["r", "g", "i"], n).astype(object)
    return data


def random_rows(table: str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A table of random rows (see :func:`random_columns`)."""
    return coerce(pd.DataFrame(random_columns(table, n, rng)), table)


def synthetic_visit(
    *,
    visit: int,
    mjd: float,
    ra: float,
    dec: float,
    rng: np.random.Generator,
    detector: int = 0,
    generation: int = 0,
    n_sources: int = 20,
    n_forced: int = 30,
    radius: float = 0.1,
    object_ids: np.ndarray | None = None,
    object_pos: tuple[np.ndarray, np.ndarray] | None = None,
) -> VisitProducts:
    """One visit's products: DiaSources in a cone around (ra, dec), one new DiaObject version
    per source (a new object unless ``object_ids`` says which), forced sources, alerts.

    ``object_pos`` places the sources exactly (ra, dec arrays of length ``n_sources``).
    """
    ids = make_ids(generation, visit, detector, n_sources)
    if object_pos is None:
        r = radius * np.sqrt(rng.random(n_sources))
        phi = rng.uniform(0, 2 * np.pi, n_sources)
        s_dec = np.clip(dec + r * np.sin(phi), -90, 90)
        s_ra = (ra + r * np.cos(phi) / max(np.cos(np.deg2rad(s_dec)).min(), 1e-3)) % 360.0
    else:
        s_ra, s_dec = object_pos
    oid = ids if object_ids is None else np.asarray(object_ids, dtype=np.int64)
    src = random_columns("DiaSource", n_sources, rng)
    src.update(
        diaSourceId=ids,
        visit=np.full(n_sources, visit),
        detector=np.full(n_sources, detector),
        band=np.full(n_sources, "r", dtype=object),
        midpointMjdTai=np.full(n_sources, mjd),
        ra=s_ra,
        dec=s_dec,
        timeWithdrawnMjdTai=np.full(n_sources, np.nan),
        ssObjectId=pd.array([pd.NA] * n_sources, dtype="Int64"),
        diaObjectId=pd.array(oid, dtype="Int64"),
    )
    obj = random_columns("DiaObject", n_sources, rng)
    obj.update(
        diaObjectId=oid,
        validityStartMjdTai=np.full(n_sources, mjd),
        validityEndMjdTai=np.full(n_sources, np.nan),
        ra=s_ra,
        dec=s_dec,
    )
    fr = radius * np.sqrt(rng.random(n_forced))
    fphi = rng.uniform(0, 2 * np.pi, n_forced)
    forced = random_columns("DiaForcedSource", n_forced, rng)
    forced.update(
        diaForcedSourceId=make_ids(generation, visit, detector, n_forced, first=n_sources),
        diaObjectId=rng.integers(1, 2**40, n_forced),
        visit=np.full(n_forced, visit),
        detector=np.full(n_forced, detector),
        midpointMjdTai=np.full(n_forced, mjd),
        dec=np.clip(dec + fr * np.sin(fphi), -90, 90),
        ra=(ra + fr * np.cos(fphi)) % 360.0,
        timeWithdrawnMjdTai=np.full(n_forced, np.nan),
    )
    alerts = [
        ArchivedAlert(
            diaSourceId=int(i),
            visit=visit,
            detector=detector,
            payload=b"\x00\x00\x00\x04\x4b" + rng.bytes(40),
            schema_id=1101,
            software_version="diaflow-test 0.1",
            generation=f"G{generation}",
            issuedMjdTai=mjd + 0.001,
        )
        for i in ids
    ]
    record = VisitRecord(
        visit=visit,
        detector=detector,
        band="r",
        midpointMjdTai=mjd,
        state="stored",
        n_new_dia_objects=n_sources if object_ids is None else 0,
        provenance=PROVENANCE,
        source_path=f"/data/raw/{visit}_{detector}.fits",
    )
    return VisitProducts(
        record=record,
        dia_sources=coerce(pd.DataFrame(src), "DiaSource"),
        dia_objects=coerce(pd.DataFrame(obj), "DiaObject"),
        dia_forced_sources=coerce(pd.DataFrame(forced), "DiaForcedSource"),
        alerts=alerts,
    )


# ---- processes for the concurrency tests (spawned: module-level, picklable arguments) ----------
def poll_reader(
    backend: str,
    where: str,
    cone: tuple[float, float, float],
    expected: dict[int, tuple[int, int]],
    ready: Any,  # multiprocessing Event
    stop: Any,
    results: Any,  # multiprocessing Queue
) -> None:
    """Read the cone over and over until told to stop; report errors and partial visits.

    ``expected[visit]`` is (DiaSources, DiaForcedSources) of that visit inside the cone: every
    read must see 0 or exactly that many of each.
    """
    from diaflow.l1db import Region

    region = Region(*cone)
    errors: list[str] = []
    partial: list[str] = []
    totals: set[int] = set()
    polls = 0
    db = open_backend(backend, where, readonly=True)
    while True:
        done = stop.is_set()
        try:
            src = db.dia_sources(region, 1e6, days=1e6).groupby("visit").size()
            forced = db.dia_forced_sources(region, 1e6, days=1e6).groupby("visit").size()
            stored = set(db.visits()["visit"].tolist())  # read after: a superset
            for v, n in src.items():
                if n != expected[v][0]:
                    partial.append(f"visit {v}: {n} of {expected[v][0]} DiaSources")
            for v, n in forced.items():
                if n != expected[v][1]:
                    partial.append(f"visit {v}: {n} of {expected[v][1]} DiaForcedSources")
            if not set(src.index) <= stored:
                partial.append(f"DiaSources of visits {set(src.index) - stored} without Visit row")
            totals.add(len(stored))
        except Exception as exc:  # the test reports every kind
            errors.append(repr(exc))
        polls += 1
        if polls == 1:
            ready.set()
        if done:
            break
    db.close()
    results.put({"errors": errors, "partial": partial, "polls": polls, "totals": len(totals)})


def store_forever(backend: str, where: str, first_visit: int) -> None:
    """Store visits of 200 DiaSources and 300 forced sources until killed."""
    db = open_backend(backend, where)
    rng = np.random.default_rng(first_visit)
    v = first_visit
    while True:
        p = synthetic_visit(
            visit=v,
            mjd=60000.0 + v,
            ra=20.0,
            dec=10.0,
            rng=rng,
            generation=3,
            n_sources=200,
            n_forced=300,
        )
        db.store_visit(p)
        v += 1
