"""What both backends share: checking a visit's products and turning rows into records."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadInputError
from .api import ArchivedAlert, Provenance, VisitProducts, VisitRecord
from .ids import unpack_id
from .schema import coerce, empty, table_spec

VISIT = table_spec("Visit")
ALERT_FIELDS = [f.name for f in dataclasses.fields(ArchivedAlert)]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A visit's products coerced to their tables and checked, ready to write."""

    record: VisitRecord
    dia_sources: pd.DataFrame
    dia_objects: pd.DataFrame
    dia_forced_sources: pd.DataFrame
    ss_sources: pd.DataFrame
    alerts: list[ArchivedAlert]


def prepare(products: VisitProducts) -> Prepared:
    """Coerce every table and check that the rows belong to the visit, before any write."""
    rec = products.record
    where = f"visit {rec.visit}/{rec.detector}"
    src = coerce(products.dia_sources, "DiaSource")
    objs = coerce(products.dia_objects, "DiaObject")
    forced = coerce(products.dia_forced_sources, "DiaForcedSource")
    sss = products.ss_sources
    if len(sss.columns):
        sss = coerce(sss, "SSSource")
    wrong = (src["visit"].to_numpy() != rec.visit) | (src["detector"].to_numpy() != rec.detector)
    # Forced sources may measure earlier visits (precovery), but their ids are this visit's.
    made_by = unpack_id(forced["diaForcedSourceId"].to_numpy())
    wrong_forced = (made_by.visit != rec.visit) | (made_by.detector != rec.detector)
    for name, bad in (("DiaSource", wrong), ("DiaForcedSource", wrong_forced)):
        if bad.any():
            raise BadInputError(
                "visit_mismatch",
                f"{where}: {int(bad.sum())} {name} rows belong to another visit-detector",
            )
    for name, df, key in (
        ("DiaSource", src, "diaSourceId"),
        ("DiaObject", objs, "diaObjectId"),
        ("DiaForcedSource", forced, "diaForcedSourceId"),
    ):
        ra, dec = df["ra"].to_numpy(), df["dec"].to_numpy()
        bad = ~((ra >= 0) & (ra < 360) & (dec >= -90) & (dec <= 90))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BadInputError(
                "bad_position",
                f"{where}: {name} row {i} has ra={float(ra[i])!r}, dec={float(dec[i])!r}; "
                "expected 0 <= ra < 360 and -90 <= dec <= 90 degrees",
            )
        ids = df[key].to_numpy()
        if len(np.unique(ids)) != len(ids):
            first = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
            raise BadInputError("duplicate_id", f"{where}: {name} id {first} appears twice")
    if len(objs) and not np.isnan(objs["validityEndMjdTai"].to_numpy()).all():
        raise BadInputError(
            "bad_dia_object",
            f"{where}: new DiaObject versions must have validityEndMjdTai NULL (NaN)",
        )
    for a in products.alerts:
        if (a.visit, a.detector) != (rec.visit, rec.detector):
            raise BadInputError(
                "visit_mismatch", f"{where}: alert {a.diaSourceId} is for {a.visit}/{a.detector}"
            )
    record = dataclasses.replace(
        rec, state="stored", n_dia_sources=len(src), n_alerts=len(products.alerts)
    )
    return Prepared(record, src, objs, forced, sss, list(products.alerts))


def visit_row(rec: VisitRecord) -> tuple[Any, ...]:
    """A VisitRecord as a Visit row in ``VISIT.names`` order."""
    p = rec.provenance
    return (
        int(rec.visit),
        int(rec.detector),
        rec.band,
        float(rec.midpointMjdTai),
        rec.state,
        rec.reason,
        int(rec.n_dia_sources),
        int(rec.n_new_dia_objects),
        int(rec.n_alerts),
        p.software_version if p else None,
        p.config_hash if p else None,
        p.template_version if p else None,
        rec.source_path,
    )


def visit_record(row: tuple[Any, ...]) -> VisitRecord:
    """Inverse of :func:`visit_row`."""
    v = dict(zip(VISIT.names, row, strict=True))
    prov = None
    if v["software_version"] is not None:
        prov = Provenance(v["software_version"], v["config_hash"], v["template_version"])
    return VisitRecord(
        visit=int(v["visit"]),
        detector=int(v["detector"]),
        band=v["band"],
        midpointMjdTai=float(v["midpointMjdTai"]),
        state=v["state"],
        reason=v["reason"],
        n_dia_sources=int(v["n_dia_sources"]),
        n_new_dia_objects=int(v["n_new_dia_objects"]),
        n_alerts=int(v["n_alerts"]),
        provenance=prov,
        source_path=v["source_path"],
    )


def alert_row(a: ArchivedAlert) -> tuple[Any, ...]:
    """An ArchivedAlert as a row in its field order."""
    return (
        int(a.diaSourceId),
        int(a.visit),
        int(a.detector),
        bytes(a.payload),
        int(a.schema_id),
        a.software_version,
        a.generation,
        float(a.issuedMjdTai),
    )


def archived_alert(row: tuple[Any, ...]) -> ArchivedAlert:
    """Inverse of :func:`alert_row`."""
    v = dict(zip(ALERT_FIELDS, row, strict=True))
    v["payload"] = bytes(v["payload"])
    return ArchivedAlert(**v)


def check_ids(ids: np.ndarray, what: str) -> list[int]:
    """int64 ids as Python ints."""
    arr = np.asarray(ids)
    if arr.size and arr.dtype.kind not in "iu":
        raise BadInputError("bad_ids", f"{what}: ids must be integers, got dtype {arr.dtype}")
    return [int(i) for i in arr.ravel()]


def region_filter(df: pd.DataFrame, region: Any) -> pd.DataFrame:
    """Keep the rows exactly inside the cone (the index scans are a superset)."""
    if not len(df):
        return df
    keep = region.contains(df["ra"].to_numpy(), df["dec"].to_numpy())
    if keep.all():
        return df
    return df.loc[keep].reset_index(drop=True)


def coerce_ss_sources(ss_sources: pd.DataFrame, ids: list[int], ss_object_id: int) -> pd.DataFrame:
    """SSSource rows of a reassignment, checked to be of those DiaSources and that SSObject."""
    if not len(ss_sources.columns):
        return empty("SSSource")
    df = coerce(ss_sources, "SSSource")
    stray = ~df["diaSourceId"].isin(ids)
    if stray.any():
        raise BadInputError(
            "stray_ss_source",
            f"SSSource rows for DiaSources {df.loc[stray, 'diaSourceId'].tolist()[:5]} that are "
            "not being reassigned",
        )
    if (df["ssObjectId"] != ss_object_id).any():
        raise BadInputError(
            "stray_ss_source", f"SSSource rows must all have ssObjectId {ss_object_id}"
        )
    return df


def check_found(ids: list[int], found: list[int]) -> None:
    """Raise when some DiaSource ids are not in the database."""
    missing = sorted(set(ids) - set(found))
    if missing:
        raise BadInputError(
            "unknown_dia_sources",
            f"{len(missing)} DiaSources are not stored (first: {missing[:5]}); nothing was "
            "reassigned",
        )
