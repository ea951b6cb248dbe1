"""The declination-zone index: the scans cover every point of the cone, and little else."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from diaflow.l1db import Region, table_spec
from diaflow.l1db._zones import ZONE_HEIGHT_DEG, zone_of, zone_ranges
from diaflow.l1db.sqlite import create_table_sql


def _covered(ranges: list[tuple[int, float, float]], ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    z = zone_of(dec)
    hit = np.zeros(len(ra), dtype=bool)
    for zone, lo, hi in ranges:
        hit |= (z == zone) & (ra >= lo) & (ra <= hi)
    return hit


@pytest.mark.parametrize(
    ("ra", "dec", "radius"),
    [
        (10.0, 0.0, 0.2),
        (0.01, -20.0, 0.3),
        (359.99, 45.0, 0.3),
        (180.0, 89.8, 0.5),  # contains the north pole
        (90.0, -89.9, 0.05),  # south pole inside
        (300.0, 88.0, 1.9),  # reaches close to the pole
        (45.0, 60.0, 5.0),
    ],
)
def test_scans_cover_the_cone_and_not_much_more(ra: float, dec: float, radius: float) -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    # Points uniform on a spherical cap of 2x the radius around the centre, plus exact edges.
    region = Region(ra, dec, radius)
    cap = np.deg2rad(min(2 * radius, 180.0))
    cos_s = 1 - rng.random(n) * (1 - np.cos(cap))
    s, pa = np.arccos(cos_s), rng.uniform(0, 2 * np.pi, n)
    d0 = np.deg2rad(dec)
    sd = np.arcsin(np.sin(d0) * cos_s + np.cos(d0) * np.sin(s) * np.cos(pa))
    sr = np.deg2rad(ra) + np.arctan2(
        np.sin(pa) * np.sin(s) * np.cos(d0), cos_s - np.sin(d0) * np.sin(sd)
    )
    pra, pdec = np.rad2deg(sr) % 360.0, np.clip(np.rad2deg(sd), -90, 90)
    inside = region.contains(pra, pdec)
    hit = _covered(zone_ranges(region), pra, pdec)
    assert not (inside & ~hit).any(), "a point of the cone is outside every scan"
    # Scanned area beyond the cone: strips' corners only (a bounding box would be ~27 %).
    assert (hit & ~inside).sum() / inside.sum() < 0.15


def test_ranges_split_at_ra_zero() -> None:
    ranges = zone_ranges(Region(0.02, 0.0, 0.05))
    assert any(lo == 0.0 for _, lo, _ in ranges)
    assert any(hi == 360.0 for _, _, hi in ranges)
    assert all(0.0 <= lo <= hi <= 360.0 for _, lo, hi in ranges)


def test_sqlite_generated_zone_matches_zone_of() -> None:
    """The zone column SQLite computes must equal the one queries are planned with."""
    conn = sqlite3.connect(":memory:")
    for stmt in create_table_sql(table_spec("DiaObjectLast")):
        conn.execute(stmt)
    rng = np.random.default_rng(1)
    dec = np.concatenate(
        [
            rng.uniform(-90, 90, 20000),
            np.arange(-90, 90.0001, ZONE_HEIGHT_DEG),  # zone edges
            [-90.0, 90.0],
        ]
    )
    conn.executemany(
        'INSERT INTO "DiaObjectLast" ("diaObjectId", "validityStartMjdTai", ra, dec, '
        '"nDiaSources", "u_psfFluxNdata", "g_psfFluxNdata", "r_psfFluxNdata", "i_psfFluxNdata", '
        '"z_psfFluxNdata", "y_psfFluxNdata") VALUES (?, 0, 0, ?, 0, 0, 0, 0, 0, 0, 0)',
        list(enumerate(dec.tolist())),
    )
    got = np.array([r[0] for r in conn.execute('SELECT zone FROM "DiaObjectLast" ORDER BY 1')])
    assert np.array_equal(np.sort(got), np.sort(zone_of(dec)))
    by_id = dict(conn.execute('SELECT "diaObjectId", zone FROM "DiaObjectLast"').fetchall())
    assert [by_id[i] for i in range(len(dec))] == zone_of(dec).tolist()
