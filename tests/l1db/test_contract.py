"""The L1Database contract, run on every backend (PostgreSQL marked ``postgres``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from l1db_support import open_backend, random_rows, synthetic_visit

from diaflow.errors import BadInputError, DatabaseError, DuplicateVisitError
from diaflow.l1db import L1Database, Region, VisitRecord, coerce, empty, make_ids, table_spec

MJD = 60300.0


def _sorted(df: pd.DataFrame, key: str) -> pd.DataFrame:
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def _same(got: pd.DataFrame, want: pd.DataFrame, key: str) -> None:
    pd.testing.assert_frame_equal(_sorted(got, key), _sorted(want, key), check_exact=True)


def test_store_reads_back_every_column_with_its_dtype(db: L1Database) -> None:
    rng = np.random.default_rng(1)
    p = synthetic_visit(visit=11, mjd=MJD, ra=150.0, dec=2.0, rng=rng, generation=3)
    db.store_visit(p)
    everywhere = Region(150.0, 2.0, 1.0)
    src = db.dia_sources(everywhere, MJD + 1)
    assert list(src.columns) == table_spec("DiaSource").names
    assert src["diaObjectId"].dtype == "Int64"
    assert src["band"].dtype == object
    _same(src, p.dia_sources, "diaSourceId")
    _same(db.dia_objects(everywhere), p.dia_objects, "diaObjectId")
    _same(db.dia_forced_sources(everywhere, MJD + 1), p.dia_forced_sources, "diaForcedSourceId")
    assert db.has_visit(11, 0)
    rec = db.visit_record(11, 0)
    assert rec == dataclasses.replace(p.record, n_dia_sources=20, n_alerts=20)
    assert db.count("DiaSource") == 20
    assert db.count("DiaForcedSource") == 30
    assert db.count("DiaObject") == 20
    visits = db.visits()
    assert visits[["visit", "detector", "state"]].values.tolist() == [[11, 0, "stored"]]
    assert visits["config_hash"].tolist() == ["cfg0123"]


def test_empty_tables_read_back_empty_with_dtypes(db: L1Database) -> None:
    got = db.dia_sources(Region(10.0, 10.0, 1.0), MJD)
    pd.testing.assert_frame_equal(got, empty("DiaSource"))
    assert db.visit_record(1, 0) is None
    assert not db.has_visit(1, 0)
    assert db.ss_objects().empty
    assert db.dia_object_history(5).empty


@pytest.mark.parametrize(
    ("ra", "dec"),
    [(120.0, -30.0), (0.05, 10.0), (359.97, -5.0), (200.0, 89.9), (33.0, -89.95)],
    ids=["plain", "wrap-low", "wrap-high", "north-pole", "south-pole"],
)
def test_region_queries_are_exact(db: L1Database, ra: float, dec: float) -> None:
    """Rows just inside and just outside the cone, across RA 0/360 and around the poles."""
    rng = np.random.default_rng(2)
    radius = 0.2
    n = 400
    # Positions spread over 3 radii, many near the edge, in true angular coordinates.
    sep = np.concatenate([rng.uniform(0, 3 * radius, n - 100), radius + rng.normal(0, 1e-6, 100)])
    pa = rng.uniform(0, 2 * np.pi, n)
    d0, r0 = np.deg2rad(dec), np.deg2rad(ra)
    s = np.deg2rad(sep)
    sd = np.arcsin(np.sin(d0) * np.cos(s) + np.cos(d0) * np.sin(s) * np.cos(pa))
    sr = r0 + np.arctan2(np.sin(pa) * np.sin(s) * np.cos(d0), np.cos(s) - np.sin(d0) * np.sin(sd))
    pos = (np.rad2deg(sr) % 360.0, np.rad2deg(sd))
    p = synthetic_visit(
        visit=5, mjd=MJD, ra=ra, dec=dec, rng=rng, generation=3, n_sources=n, object_pos=pos
    )
    db.store_visit(p)
    region = Region(ra, dec, radius)
    want = set(p.dia_sources.loc[region.contains(*pos), "diaSourceId"].tolist())
    assert 50 < len(want) < n  # the test cuts through the data
    got = db.dia_sources(region, MJD + 1)
    assert set(got["diaSourceId"].tolist()) == want
    assert set(db.dia_objects(region)["diaObjectId"].tolist()) == want


def test_time_window_is_start_inclusive_end_exclusive(db: L1Database) -> None:
    rng = np.random.default_rng(3)
    mjds = [MJD, MJD + 40.0, MJD + 100.0, MJD + 365.25]
    for v, mjd in enumerate(mjds, start=1):
        db.store_visit(synthetic_visit(visit=v, mjd=mjd, ra=40.0, dec=0.0, rng=rng, generation=3))
    region = Region(40.0, 0.0, 0.5)
    got = db.dia_sources(region, MJD + 100.0, days=60.0)  # [MJD+40, MJD+100)
    assert sorted(set(got["visit"].tolist())) == [2]
    got = db.dia_sources(region, MJD + 365.25)  # one year by default: [MJD, MJD+365.25)
    assert sorted(set(got["visit"].tolist())) == [1, 2, 3]
    forced = db.dia_forced_sources(region, MJD + 41.0, days=41.0)
    assert sorted(set(forced["visit"].tolist())) == [1, 2]


def test_dia_object_versions_close_and_last_table_follows(db: L1Database) -> None:
    rng = np.random.default_rng(4)
    p1 = synthetic_visit(visit=1, mjd=MJD, ra=80.0, dec=20.0, rng=rng, generation=3, n_sources=5)
    db.store_visit(p1)
    ids = p1.dia_objects["diaObjectId"].to_numpy()
    pos = (p1.dia_objects["ra"].to_numpy(), p1.dia_objects["dec"].to_numpy())
    p2 = synthetic_visit(
        visit=2,
        mjd=MJD + 1,
        ra=80.0,
        dec=20.0,
        rng=rng,
        generation=3,
        n_sources=5,
        object_ids=ids,
        object_pos=pos,
    )
    db.store_visit(p2)
    hist = db.dia_object_history(int(ids[0]))
    assert hist["validityStartMjdTai"].tolist() == [MJD, MJD + 1]
    assert hist["validityEndMjdTai"].iloc[0] == MJD + 1
    assert np.isnan(hist["validityEndMjdTai"].iloc[1])
    assert db.count("DiaObject") == 5  # latest versions only
    last = db.dia_objects(Region(80.0, 20.0, 0.5))
    _same(last, p2.dia_objects, "diaObjectId")
    # A version older than the stored one is refused, and nothing of that visit is written.
    p0 = synthetic_visit(
        visit=3,
        mjd=MJD - 1,
        ra=80.0,
        dec=20.0,
        rng=rng,
        generation=3,
        n_sources=5,
        object_ids=ids,
        object_pos=pos,
    )
    with pytest.raises(BadInputError, match="time order"):
        db.store_visit(p0)
    assert not db.has_visit(3, 0)
    assert db.count("DiaSource") == 10
    assert len(db.dia_object_history(int(ids[0]))) == 2


def test_duplicate_store_is_refused_and_writes_nothing(db: L1Database) -> None:
    rng = np.random.default_rng(5)
    p = synthetic_visit(visit=7, mjd=MJD, ra=10.0, dec=-40.0, rng=rng, generation=3)
    db.store_visit(p)
    other = synthetic_visit(
        visit=7, mjd=MJD, ra=10.0, dec=-40.0, rng=rng, generation=3, n_sources=20
    )
    other.dia_sources["diaSourceId"] += 100  # different rows, same visit
    with pytest.raises(DuplicateVisitError, match="already stored"):
        db.store_visit(other)
    assert db.count("DiaSource") == 20
    assert db.count("Outbox") == 20
    assert set(db.dia_sources(Region(10.0, -40.0, 1.0), MJD + 1)["diaSourceId"]) == set(
        p.dia_sources["diaSourceId"]
    )


def test_bad_products_write_nothing(db: L1Database) -> None:
    rng = np.random.default_rng(6)
    p = synthetic_visit(visit=8, mjd=MJD, ra=10.0, dec=0.0, rng=rng, generation=3)
    p.dia_sources.loc[3, "visit"] = 9
    with pytest.raises(BadInputError, match="another visit-detector"):
        db.store_visit(p)
    p = synthetic_visit(visit=8, mjd=MJD, ra=10.0, dec=0.0, rng=rng, generation=3)
    p.dia_sources["notAColumn"] = 1.0
    with pytest.raises(BadInputError, match="notAColumn"):
        db.store_visit(p)
    p = synthetic_visit(visit=8, mjd=MJD, ra=10.0, dec=0.0, rng=rng, generation=3)
    p.dia_objects.loc[0, "dec"] = 95.0
    with pytest.raises(BadInputError, match="dec=95"):
        db.store_visit(p)
    assert db.visit_record(8, 0) is None
    assert db.count("DiaSource") == 0


def test_quarantine_is_idempotent_and_a_retry_can_store(db: L1Database) -> None:
    rng = np.random.default_rng(7)
    p = synthetic_visit(visit=21, mjd=MJD, ra=10.0, dec=0.0, rng=rng, generation=3)
    bad = dataclasses.replace(p.record, reason="corrupt_file: truncated FITS", state="stored")
    db.quarantine_visit(bad)
    db.quarantine_visit(bad)
    rec = db.visit_record(21, 0)
    assert rec is not None
    assert rec.state == "quarantined"
    assert rec.reason.startswith("corrupt")
    assert not db.has_visit(21, 0)
    db.store_visit(p)  # the retry after the file was fixed
    assert db.visit_record(21, 0).state == "stored"  # type: ignore[union-attr]
    with pytest.raises(DuplicateVisitError, match="not quarantined"):
        db.quarantine_visit(bad)
    assert db.has_visit(21, 0)


def test_outbox_then_mark_alerted(db: L1Database) -> None:
    rng = np.random.default_rng(8)
    p = synthetic_visit(visit=31, mjd=MJD, ra=10.0, dec=0.0, rng=rng, generation=3)
    db.store_visit(p)
    assert db.outbox(31, 0) == sorted(p.alerts, key=lambda a: a.diaSourceId)
    db.mark_alerted(31, 0)
    db.mark_alerted(31, 0)
    assert db.outbox(31, 0) == []
    assert db.visit_record(31, 0).state == "alerted"
    assert db.has_visit(31, 0)
    with pytest.raises(DuplicateVisitError):
        db.store_visit(p)
    with pytest.raises(DatabaseError, match="not stored"):
        db.mark_alerted(32, 0)


def test_ss_object_upsert_replaces_by_id(db: L1Database) -> None:
    rng = np.random.default_rng(9)
    first = random_rows("SSObject", 3, rng)
    first["ssObjectId"] = [1, 2, 3]
    db.upsert_ss_objects(first)
    second = random_rows("SSObject", 2, rng)
    second["ssObjectId"] = [3, 4]
    db.upsert_ss_objects(second)
    got = db.ss_objects()
    assert got["ssObjectId"].tolist() == [1, 2, 3, 4]
    want = pd.concat([first.iloc[:2], second], ignore_index=True)
    _same(got, want, "ssObjectId")


def test_reassign_attributes_sources_and_retires_orphaned_objects(db: L1Database) -> None:
    rng = np.random.default_rng(10)
    p1 = synthetic_visit(visit=1, mjd=MJD, ra=70.0, dec=5.0, rng=rng, generation=3, n_sources=3)
    db.store_visit(p1)
    a, b, c = (int(i) for i in p1.dia_objects["diaObjectId"])
    pos = (p1.dia_objects["ra"].to_numpy()[1:2], p1.dia_objects["dec"].to_numpy()[1:2])
    p2 = synthetic_visit(
        visit=2,
        mjd=MJD + 1,
        ra=70.0,
        dec=5.0,
        rng=rng,
        generation=3,
        n_sources=1,
        object_ids=np.array([b]),
        object_pos=pos,
    )
    db.store_visit(p2)
    src1 = p1.dia_sources["diaSourceId"].tolist()
    moving = [src1[0], src1[1]]  # all of a's sources, one of b's two
    sss = coerce(
        pd.DataFrame(
            {
                "diaSourceId": moving,
                "ssObjectId": 77,
                "eclLambda": 1.0,
                "eclBeta": 2.0,
                "galLon": 3.0,
                "galLat": 4.0,
            }
        ),
        "SSSource",
    )
    with pytest.raises(BadInputError, match="not stored"):
        db.reassign_dia_sources(np.array([*moving, 12345]), 77, sss)
    db.reassign_dia_sources(np.array(moving), 77, sss)
    src = _sorted(db.dia_sources(Region(70.0, 5.0, 1.0), MJD + 2), "diaSourceId")
    moved = src[src["diaSourceId"].isin(moving)]
    assert moved["ssObjectId"].tolist() == [77, 77]
    assert moved["diaObjectId"].isna().all()
    live = set(db.dia_objects(Region(70.0, 5.0, 1.0))["diaObjectId"].tolist())
    assert live == {b, c}
    hist_a = db.dia_object_history(a)
    assert len(hist_a) == 1
    assert hist_a["validityEndMjdTai"].iloc[0] == MJD + 1
    assert np.isnan(db.dia_object_history(b)["validityEndMjdTai"].iloc[-1])
    assert db.count("SSSource") == 2
    assert db.count("DiaObject") == 2


def test_readonly_reader_sees_data_and_cannot_write(
    db: L1Database, backend_where: tuple[str, object]
) -> None:
    rng = np.random.default_rng(11)
    p = synthetic_visit(visit=41, mjd=MJD, ra=10.0, dec=0.0, rng=rng, generation=3)
    db.store_visit(p)
    backend, where = backend_where
    with open_backend(backend, where, readonly=True) as ro:  # type: ignore[arg-type]
        assert ro.has_visit(41, 0)
        assert ro.count("DiaSource") == 20
        with pytest.raises(DatabaseError):
            ro.mark_alerted(41, 0)
        record = VisitRecord(visit=42, detector=0, band="r", midpointMjdTai=MJD, state="stored")
        with pytest.raises(DatabaseError):
            ro.quarantine_visit(record)
    assert db.visit_record(42, 0) is None


def test_count_of_unknown_table_names_the_tables(db: L1Database) -> None:
    with pytest.raises(BadInputError, match="DiaForcedSource"):
        db.count("DiaSauce")


def test_ids_of_two_generations_never_collide() -> None:
    a = make_ids(3, 7, 0, 100)
    b = make_ids(4, 7, 0, 100)
    assert not set(a.tolist()) & set(b.tolist())


def test_two_detectors_of_one_visit_share_a_version(db: L1Database) -> None:
    """The second detector's version of an object at the same start replaces the first."""
    rng = np.random.default_rng(13)
    p1 = synthetic_visit(visit=1, mjd=MJD, ra=5.0, dec=5.0, rng=rng, generation=3, n_sources=3)
    db.store_visit(p1)
    ids = p1.dia_objects["diaObjectId"].to_numpy()
    pos = (p1.dia_objects["ra"].to_numpy(), p1.dia_objects["dec"].to_numpy())
    d0 = synthetic_visit(
        visit=2,
        mjd=MJD + 1,
        ra=5.0,
        dec=5.0,
        rng=rng,
        generation=3,
        n_sources=3,
        object_ids=ids,
        object_pos=pos,
    )
    d1 = synthetic_visit(
        visit=2,
        detector=1,
        mjd=MJD + 1,
        ra=5.0,
        dec=5.0,
        rng=rng,
        generation=3,
        n_sources=3,
        object_ids=ids,
        object_pos=pos,
    )
    db.store_visit(d0)
    db.store_visit(d1)
    hist = db.dia_object_history(int(ids[0]))
    assert hist["validityStartMjdTai"].tolist() == [MJD, MJD + 1]
    assert hist["validityEndMjdTai"].iloc[0] == MJD + 1
    _same(hist.iloc[[1]].reset_index(drop=True), d1.dia_objects.iloc[[0]], "diaObjectId")
    _same(db.dia_objects(Region(5.0, 5.0, 0.5)), d1.dia_objects, "diaObjectId")
