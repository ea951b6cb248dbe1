"""Run the Level 1 database workload through Rubin's APDB (``ApdbSql``); runs in ``.venv-apdb``.

    .venv-apdb/bin/python benchmarks/peer_apdb.py SPEC.json

The spec (written by ``bench_l1db.py``) gives the workload, the checkpoints, the columns and the
backend: ``{"kind": "sqlite", "path": <folder>}`` or ``{"kind": "postgresql", "url": ...,
"namespace": ...}``, plus ``dia_object_index`` (ApdbSql's DiaObject layout). The database is made
with ``ApdbSql.init_database``; each probe visit reads its cone through ApdbSql's public API
(``getDiaObjects(region)``, ``getDiaSources(region, None, ...)``, then
``getDiaForcedSources(region, <those objects' ids>, ...)``: ApdbSql selects forced sources by
object only; objects and sources outside the cone, which ApdbSql may return, are dropped as
diaflow drops them), and every visit is written by one ``store()`` call. A PostgreSQL namespace is
dropped at the end. Prints one JSON object: the figures of ``bench_l1db.drive``.

diaflow is not imported here: ``lsst-dax-apdb`` lives in its own environment (``make apdb``) so
that it never becomes a dependency of diaflow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import astropy.time
import sqlalchemy
from lsst.dax.apdb.sql import ApdbSql
from lsst.sphgeom import Angle, Circle, LonLat, UnitVector3d

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_l1db import DAYS_PER_YEAR, VisitBatch, drive, in_cone, load_spec


class ApdbSide:
    """The driver's view of one ApdbSql database."""

    def __init__(self, backend: dict[str, Any]) -> None:
        self.backend = backend
        kind = backend["kind"]
        if kind == "sqlite":
            folder = Path(backend["path"])
            folder.mkdir(parents=True, exist_ok=True)
            url, namespace = f"sqlite:///{folder / 'apdb.sqlite3'}", None
        elif kind == "postgresql":
            url, namespace = backend["url"], backend["namespace"]
        else:
            raise ValueError(f"unknown backend {kind!r}")
        config = ApdbSql.init_database(
            url,
            namespace=namespace,
            dia_object_index=backend.get("dia_object_index", "baseline"),
            drop=True,
        )
        self.url, self.namespace = url, namespace
        self.apdb = ApdbSql(config)

    @staticmethod
    def _times(batch: VisitBatch) -> tuple[astropy.time.Time, astropy.time.Time]:
        visit_time = astropy.time.Time(batch.mjd, format="mjd", scale="tai")
        start = astropy.time.Time(batch.mjd - DAYS_PER_YEAR, format="mjd", scale="tai")
        return visit_time, start

    def read(self, batch: VisitBatch) -> tuple[int, int, int]:
        region = Circle(
            UnitVector3d(LonLat.fromDegrees(batch.ra, batch.dec)), Angle.fromDegrees(batch.radius)
        )
        visit_time, start = self._times(batch)
        # ApdbSql returns everything in the cone's HTM envelope; keep the cone, as diaflow does.
        objects = self.apdb.getDiaObjects(region)
        objects = objects[_in_cone(objects["ra"], objects["dec"], batch)]
        sources = self.apdb.getDiaSources(region, None, visit_time, start_time=start)
        sources = sources[_in_cone(sources["ra"], sources["dec"], batch)]
        forced = self.apdb.getDiaForcedSources(
            region, objects["diaObjectId"].tolist(), visit_time, start_time=start
        )
        return len(objects), len(sources), len(forced)

    def store(self, batch: VisitBatch) -> None:
        visit_time, _ = self._times(batch)
        self.apdb.store(visit_time, batch.dia_objects, batch.dia_sources, batch.dia_forced_sources)

    def close(self) -> None:
        self.apdb._engine.dispose()
        if self.namespace is not None:
            engine = sqlalchemy.create_engine(self.url)
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{self.namespace}" CASCADE'))
            engine.dispose()


def _in_cone(ra: Any, dec: Any, batch: VisitBatch) -> Any:
    return in_cone(ra.to_numpy(), dec.to_numpy(), batch.ra, batch.dec, batch.radius)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit(__doc__)
    workload, checkpoints, cols, backend = load_spec(Path(args[0]))
    side = ApdbSide(backend)
    try:
        figures = drive(side, workload, checkpoints, cols, log=_log)
    except BaseException:
        side.close()
        raise
    figures["peer"] = "ApdbSql"
    figures["backend"] = backend["kind"]
    figures["dia_object_index"] = side.apdb.config.dia_object_index
    print(json.dumps(figures))
    sys.stdout.flush()


def _log(message: str) -> None:
    print(f"[ApdbSql] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
