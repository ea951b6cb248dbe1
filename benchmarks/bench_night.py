"""Benchmark the nightly runner: latency per visit from exposure on disk to alerts written.

A one-detector survey (2048 x 2048; ``--quick``: 1024 x 1024) of the ``default`` preset's sky is
simulated over 10 nights of r-band pairs (untimed); templates are built from the first 6 nights
(untimed); then every later night is run with :func:`diaflow.nightly.runner.run_night`, one BLAS
thread, into a fresh SQLite Level 1 database with Avro alert files. Exposures arrive one at a
time, as at a telescope: each file is *touched* and handed to the runner on its own, so the
latency of a visit runs from its file appearing to its alerts being written, including opening
the database and reading the template. The median of each stage is reported beside it.

Run it as ``diaflow bench night [--quick] [--json]`` or ``python benchmarks/bench_night.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment


def run(quick: bool = False) -> dict[str, object]:
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from diaflow.diffim import StampConfig, SubtractConfig
    from diaflow.nightly import VisitConfig
    from diaflow.nightly.prompt import PromptConfig
    from diaflow.nightly.repo import Repo
    from diaflow.nightly.runner import NightConfig, run_night
    from diaflow.nightly.templates import build_templates
    from diaflow.sim import preset, simulate_survey

    side = 1024 if quick else 2048
    t_start = time.perf_counter()
    cfg = preset(
        "default",
        **{
            "seed": 2024,
            "camera.n_detectors": 1,
            "camera.detector_shape": (side, side),
            "cadence.n_nights": 10,
            "cadence.visits_per_night": 2,
            "cadence.weather_loss_fraction": 0.0,
            "cadence.bands": ("r",),
            "sky.star_density_per_arcmin2": 12.0,
            "sky.transients_per_deg2_per_day": 300.0,
            "sky.main_belt_per_deg2": 600.0,
            "render.satellite_probability": 0.2,
        },
    )
    config = NightConfig(
        prompt=PromptConfig(
            visit=VisitConfig(
                subtract=SubtractConfig(stamps=StampConfig(min_snr=10.0, min_stamps=5))
            )
        )
    )
    with tempfile.TemporaryDirectory(prefix="diaflow-bench-") as tmp, threadpool_limits(1):
        out = Path(tmp) / "survey"
        simulate_survey(cfg, out)
        visits = pd.read_parquet(out / "visits.parquet")
        refcat = pd.read_parquet(out / "refcat.parquet")
        repo = Repo(Path(tmp) / "repo")
        t0 = time.perf_counter()
        build_templates([out / p for p in visits[visits["night"] < 6]["path"]], repo, refcat=refcat)
        template_s = time.perf_counter() - t0
        outcomes = []
        for night in sorted(set(visits["night"]) - set(range(6))):
            for p in visits[visits["night"] == night]["path"]:
                os.utime(out / p)
                summary = run_night([out / p], repo, refcat=refcat, config=config, label=p)
                outcomes.extend(summary.outcomes)
    done = [o for o in outcomes if o.status == "alerted"]
    table = pd.DataFrame([o.seconds for o in done])
    figures: dict[str, object] = {
        "bench": "night",
        "detector_px": side,
        "visits": len(outcomes),
        "visits_alerted": len(done),
        "visits_other": {o.status for o in outcomes if o.status != "alerted"} or "",
        "template_build_s": template_s,
        "dia_sources_per_visit_median": float(np.median([o.n_dia_sources for o in done])),
        "alerts_per_visit_median": float(np.median([o.n_alerts for o in done])),
    }
    if len(table):
        figures["latency_median_s"] = float(table["latency"].median())
        figures["latency_p98_s"] = float(np.percentile(table["latency"], 98))
        figures["processing_median_s"] = float(table["total"].median())
        figures["processing_p98_s"] = float(np.percentile(table["total"], 98))
        for stage in table.columns:
            if stage not in ("latency", "total"):
                figures[f"{stage}_median_s"] = float(table[stage].median())
    figures["bench_wall_s"] = time.perf_counter() - t_start
    figures.update(environment())
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = run(quick=args.quick)
    if args.json:
        print(json.dumps(figures, default=str))
    else:
        for key, value in figures.items():
            print(f"{key:34s} {value:.4g}" if isinstance(value, float) else f"{key:34s} {value}")


if __name__ == "__main__":
    main()
