"""Synthetic Level 1 rows for the backend tests: complete APDB rows, without images."""

from __future__ import annotations

import numpy as np
import pandas as pd

from diaflow.l1db.api import ArchivedAlert, Provenance, VisitProducts, VisitRecord
from diaflow.l1db.ids import make_ids
from diaflow.l1db.schema import coerce, table_spec

PROVENANCE = Provenance("diaflow-test 0.1", "cfg0123", "templates-v1")


def random_rows(table: str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Every column of a table filled with random values of its type (some NULLs)."""
    data: dict[str, object] = {}
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
    return coerce(pd.DataFrame(data), table)


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
    src = random_rows("DiaSource", n_sources, rng)
    ids = make_ids(generation, visit, detector, n_sources)
    if object_pos is None:
        r = radius * np.sqrt(rng.random(n_sources))
        phi = rng.uniform(0, 2 * np.pi, n_sources)
        s_dec = np.clip(dec + r * np.sin(phi), -90, 90)
        s_ra = (ra + r * np.cos(phi) / max(np.cos(np.deg2rad(s_dec)).min(), 1e-3)) % 360.0
    else:
        s_ra, s_dec = object_pos
    src["diaSourceId"] = ids
    src["visit"] = visit
    src["detector"] = np.int16(detector)
    src["band"] = "r"
    src["midpointMjdTai"] = mjd
    src["ra"], src["dec"] = s_ra, s_dec
    src["timeWithdrawnMjdTai"] = np.nan
    src["ssObjectId"] = pd.array([pd.NA] * n_sources, dtype="Int64")
    oid = ids if object_ids is None else np.asarray(object_ids, dtype=np.int64)
    src["diaObjectId"] = pd.array(oid, dtype="Int64")
    obj = random_rows("DiaObject", n_sources, rng)
    obj["diaObjectId"] = oid
    obj["validityStartMjdTai"] = mjd
    obj["validityEndMjdTai"] = np.nan
    obj["ra"], obj["dec"] = s_ra, s_dec
    forced = random_rows("DiaForcedSource", n_forced, rng)
    forced["diaForcedSourceId"] = make_ids(generation, visit, detector, n_forced, first=n_sources)
    forced["diaObjectId"] = rng.integers(1, 2**40, n_forced)
    forced["visit"] = visit
    forced["detector"] = np.int16(detector)
    forced["midpointMjdTai"] = mjd
    fr = radius * np.sqrt(rng.random(n_forced))
    fphi = rng.uniform(0, 2 * np.pi, n_forced)
    forced["dec"] = np.clip(dec + fr * np.sin(fphi), -90, 90)
    forced["ra"] = (ra + fr * np.cos(fphi)) % 360.0
    forced["timeWithdrawnMjdTai"] = np.nan
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
        dia_sources=coerce(src, "DiaSource"),
        dia_objects=coerce(obj, "DiaObject"),
        dia_forced_sources=coerce(forced, "DiaForcedSource"),
        alerts=alerts,
    )
