"""Readers in other processes during a night of stores, and writers killed mid-visit: readers
never error and never see part of a visit; a killed writer leaves whole visits only.

Child processes are forked before the parent opens any connection (an inherited SQLite
connection closed in a child would drop the parent's file locks).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from l1db_support import BACKENDS, open_backend, poll_reader, store_forever, synthetic_visit

from diaflow.l1db import Region

CONE = (20.0, 10.0, 0.05)
N_VISITS = 52


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "G3.sqlite3")
    return "postgres", request.getfixturevalue("pg_schema")


def test_readers_never_error_nor_see_half_a_visit(location: tuple[str, str]) -> None:
    backend, where = location
    rng = np.random.default_rng(12)
    visits = [
        synthetic_visit(
            visit=v,
            mjd=60000.0 + v,
            ra=20.0,
            dec=10.0,
            rng=rng,
            generation=3,
            n_sources=100,
            n_forced=150,
        )
        for v in range(1, N_VISITS + 1)
    ]
    region = Region(*CONE)
    expected = {
        p.record.visit: (
            int(region.contains(p.dia_sources["ra"], p.dia_sources["dec"]).sum()),
            int(region.contains(p.dia_forced_sources["ra"], p.dia_forced_sources["dec"]).sum()),
        )
        for p in visits
    }
    assert min(n for n, _ in expected.values()) > 5  # the cone cuts every visit
    open_backend(backend, where).close()  # creates the tables
    ctx = mp.get_context("fork")
    ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    reader = ctx.Process(
        target=poll_reader,
        args=(backend, where, CONE, expected, ready, stop, results),
    )
    reader.start()
    writer = open_backend(backend, where)
    try:
        assert ready.wait(60), "the reader process did not start"
        for p in visits:
            writer.store_visit(p)
            time.sleep(0.005)
        stop.set()
        report = results.get(timeout=60)
    finally:
        reader.join(30)
        if reader.is_alive():
            reader.kill()
        writer.close()
    assert report["errors"] == []
    assert report["partial"] == []
    assert report["polls"] >= 10
    assert report["totals"] >= 3, "the reads did not overlap the stores"


@pytest.mark.parametrize("kill_after_s", [0.9, 1.3, 1.7])
def test_a_writer_killed_mid_visit_leaves_whole_visits(
    location: tuple[str, str], kill_after_s: float
) -> None:
    backend, where = location
    open_backend(backend, where).close()
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=store_forever, args=(backend, where, 1))
    proc.start()
    db = open_backend(backend, where)
    try:
        deadline = time.monotonic() + 60
        while db.count("Visit") < 2 and time.monotonic() < deadline:  # wait for its imports
            time.sleep(0.02)
        time.sleep(kill_after_s - 0.8)
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        stored = db.visits()
        assert len(stored) >= 2
        assert set(stored["state"]) == {"stored"}
        src = db.dia_sources(Region(20.0, 10.0, 1.0), 1e6, days=1e6)
        per_visit = src.groupby("visit").size()
        assert set(per_visit.index) == set(stored["visit"])
        assert set(per_visit) == {200}
        assert db.count("DiaForcedSource") == 300 * len(stored)
        assert db.count("Outbox") == 200 * len(stored)
        # And the night goes on: the next visit stores.
        nxt = int(stored["visit"].max()) + 1
        db.store_visit(
            synthetic_visit(
                visit=nxt,
                mjd=60000.0 + nxt,
                ra=20.0,
                dec=10.0,
                rng=np.random.default_rng(0),
                generation=3,
            )
        )
        assert db.has_visit(nxt, 0)
    finally:
        if proc.is_alive():
            proc.kill()
        db.close()
