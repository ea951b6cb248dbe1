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


def _same(got: dict[str, object], expected: dict[str, object]) -> None:
    for name, table in expected["tables"].items():  # type: ignore[attr-defined]
        pd.testing.assert_frame_equal(got["tables"][name], table, obj=name)  # type: ignore[index]
    assert sorted(got["archived"]) == sorted(expected["archived"])  # type: ignore[type-var]
    assert got["n_archived"] == expected["n_archived"]
    # Every alert is in the Avro files exactly once.
    assert sorted(got["files"]) == sorted(expected["files"])  # type: ignore[type-var]
    assert len(set(got["files"])) == len(got["files"])  # type: ignore[arg-type]


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
    assert len(expected["archived"]) > 10  # type: ignore[arg-type]

    # One episode through every step boundary: the second visit dies before its store, then
    # after it, after archiving and after sending; each run resumes where the last one died.
    repo = tmp_path / "steps"
    s.fresh_repo(repo)
    kills = 0
    for spec in ("before_store:2", "after_store:1", "after_archive:1", "after_send:1"):
        env = {**os.environ, "DIAFLOW_CRASH_AT": spec}
        done = subprocess.run(_command(inputs, repo, refcat), env=env, capture_output=True)
        assert done.returncode == 137, (spec, done.stderr[-2000:])
        kills += 1
    subprocess.run(_command(inputs, repo, refcat), check=True, capture_output=True)
    _same(_snapshot(repo), expected)

    # Then SIGKILL at random moments: episodes on fresh copies, each killed until a run ends
    # on its own, each compared with the uninterrupted run.
    rng = np.random.default_rng(20261125)
    episode = 0
    while kills < 20:
        episode += 1
        repo = tmp_path / f"random{episode}"
        s.fresh_repo(repo)
        while True:
            proc = subprocess.Popen(
                _command(inputs, repo, refcat),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                proc.wait(timeout=rng.uniform(0.15, 0.95) * full)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
            assert proc.returncode == 0
            break
        _same(_snapshot(repo), expected)
    assert kills >= 20
