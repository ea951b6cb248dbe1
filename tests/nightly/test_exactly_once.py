"""Exactly once: kill the nightly runner anywhere, run it again, and get the same database and
every alert exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pytest

from diaflow.l1db import L1DbConfig, open_archive, open_l1db
from diaflow.l1db.api import Region
from simdata import NightSurvey

pytestmark = pytest.mark.slow

STEPS = ("before_store", "after_store", "after_archive", "after_send")


def _command(inputs: list[Path], repo: Path, refcat: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from diaflow.cli import app; app()",
        "night",
        "run",
        *map(str, inputs),
        "--repo",
        str(repo),
        "--refcat",
        str(refcat),
    ]


def _snapshot(repo: Path) -> dict[str, object]:
    sky = Region(0.0, 0.0, 180.0)
    config = L1DbConfig(path=repo / "l1db")
    with open_l1db(config, readonly=True) as db:
        tables = {
            "DiaSource": db.dia_sources(sky, 1e6, days=1e6).sort_values("diaSourceId"),
            "DiaForcedSource": db.dia_forced_sources(sky, 1e6, days=1e6).sort_values(
                "diaForcedSourceId"
            ),
            "DiaObject": db.dia_objects(sky).sort_values("diaObjectId"),
            "Visit": db.visits().sort_values(["visit", "detector"]),
        }
        visits = db.visits()
    tables = {
        k: v.drop(columns=["timeProcessedMjdTai"], errors="ignore").reset_index(drop=True)
        for k, v in tables.items()
    }
    with open_archive(config) as archive:
        archived = [
            a.diaSourceId
            for v in visits.itertuples()
            for a in archive.for_visit(int(v.visit), int(v.detector))
        ]
        n_archived = archive.count()
    in_files = []
    for path in sorted((repo / "alerts").glob("*.avro")):
        with open(path, "rb") as f:
            in_files.extend(r["diaSourceId"] for r in fastavro.reader(f))
    return {"tables": tables, "archived": archived, "n_archived": n_archived, "files": in_files}


def test_killed_anywhere_and_rerun_gives_the_same_result(
    night_survey: NightSurvey, tmp_path: Path
) -> None:
    s = night_survey
    inputs = s.inputs([4])[:2]
    refcat = s.survey / "refcat.parquet"

    reference = tmp_path / "reference"
    s.fresh_repo(reference)
    t0 = time.perf_counter()
    subprocess.run(_command(inputs, reference, refcat), check=True, capture_output=True)
    full = time.perf_counter() - t0
    expected = _snapshot(reference)
    assert len(expected["archived"]) > 10

    repo = tmp_path / "killed"
    s.fresh_repo(repo)
    rng = np.random.default_rng(20261125)
    kills = 0
    # Every step boundary of the first and of a later visit...
    for step in STEPS:
        for n in (1, 3):
            env = {**os.environ, "DIAFLOW_CRASH_AT": f"{step}:{n}"}
            done = subprocess.run(_command(inputs, repo, refcat), env=env, capture_output=True)
            if done.returncode == 137:
                kills += 1
    # ...and SIGKILL at random moments.
    while kills < 22:
        proc = subprocess.Popen(
            _command(inputs, repo, refcat), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.3, 0.8) * full)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 20
    subprocess.run(_command(inputs, repo, refcat), check=True, capture_output=True)

    got = _snapshot(repo)
    for name, table in expected["tables"].items():  # type: ignore[attr-defined]
        pd.testing.assert_frame_equal(got["tables"][name], table, obj=name)  # type: ignore[index]
    assert sorted(got["archived"]) == sorted(expected["archived"])
    assert got["n_archived"] == expected["n_archived"]
    # Every alert is in the Avro files exactly once.
    assert sorted(got["files"]) == sorted(expected["files"])
    assert len(set(got["files"])) == len(got["files"])
