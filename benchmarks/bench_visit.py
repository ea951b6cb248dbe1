"""Benchmark the per-visit pipeline: calibrate, warp the template, subtract, detect and measure.

A one-detector survey (2048 x 2048; ``--quick``: 1024 x 1024) of the ``default`` preset's sky
(12 stars per square arcminute) is
simulated over 10 nights of r-band pairs (untimed); a template is built from the first 6 nights
(untimed; its build time is reported apart); every later visit is processed with
:func:`diaflow.nightly.process_visit` on one core. Reported: the median and 98th percentile of
the per-visit total and the median of each stage, the DiaSources per visit, and, as a baseline
measured in the same run, the time of one FFT convolution of the image with a 31 x 31 kernel
(``scipy.signal.fftconvolve``), with the pipeline's time in units of it.

Run it as ``diaflow bench visit [--quick] [--json]`` or ``python benchmarks/bench_visit.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, median_seconds


def run(quick: bool = False) -> dict[str, object]:
    import pandas as pd
    from scipy.signal import fftconvolve
    from threadpoolctl import threadpool_limits

    from diaflow.coadd import make_patch
    from diaflow.diffim import StampConfig, SubtractConfig
    from diaflow.image import read_exposure
    from diaflow.nightly import VisitConfig, build_patch_template, process_visit
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
            # An intermediate-latitude field: enough reference stars for a 1024^2 detector.
            "sky.star_density_per_arcmin2": 12.0,
            "sky.transients_per_deg2_per_day": 300.0,
            "sky.main_belt_per_deg2": 600.0,
            "render.satellite_probability": 0.2,
        },
    )
    with tempfile.TemporaryDirectory(prefix="diaflow-bench-") as tmp, threadpool_limits(1):
        out = Path(tmp)
        simulate_survey(cfg, out)
        visits = pd.read_parquet(out / "visits.parquet")
        refcat = pd.read_parquet(out / "refcat.parquet")
        first, later = visits[visits["night"] < 6], visits[visits["night"] >= 6]
        row0 = visits.iloc[0]
        patch = make_patch(
            ra_deg=float(row0["boresight_ra_deg"]),
            dec_deg=float(row0["boresight_dec_deg"]),
            size_arcsec=side * 0.2 * 1.5,
            pixel_scale_arcsec=0.2,
            name="bench",
        )
        t0 = time.perf_counter()
        template = build_patch_template(
            [read_exposure(out / p) for p in first["path"]], refcat=refcat, patch=patch, band="r"
        )
        template_s = time.perf_counter() - t0
        config = VisitConfig(
            subtract=SubtractConfig(stamps=StampConfig(min_snr=10.0, min_stamps=5))
        )
        rows, failures = [], 0
        for _, row in later.iterrows():
            exposure = read_exposure(out / row["path"])
            try:
                result = process_visit(exposure, refcat=refcat, template=template, config=config)
            except Exception:  # a visit that fails counts, but does not stop the benchmark
                failures += 1
                continue
            rows.append(
                {
                    **result.seconds,
                    "dia_sources": len(result.dia_sources),
                    "noise_ratio": result.subtraction.quality.noise_ratio,
                }
            )
        rng = np.random.default_rng(1)
        image = rng.normal(0, 1, (side, side)).astype(np.float32)
        kernel = rng.normal(0, 1, (31, 31))
        fft_s = median_seconds(lambda: fftconvolve(image, kernel, mode="same"), 5)
    table = pd.DataFrame(rows)
    figures: dict[str, object] = {
        "bench": "visit",
        "detector_px": side,
        "visits_processed": len(table),
        "visits_failed": failures,
        "template_inputs": len(template.visits),
        "template_build_s": template_s,
        "fft_convolution_s": fft_s,
    }
    if len(table):
        figures.update(
            {
                "total_median_s": float(table["total"].median()),
                "total_p98_s": float(np.percentile(table["total"], 98)),
                **{
                    f"{stage}_median_s": float(table[stage].median())
                    for stage in ("calibrate", "warp", "subtract", "measure")
                },
                "total_over_fft": float(table["total"].median() / fft_s),
                "subtract_over_fft": float(table["subtract"].median() / fft_s),
                "dia_sources_median": float(table["dia_sources"].median()),
                "difference_noise_ratio_median": float(table["noise_ratio"].median()),
            }
        )
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
            print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")


if __name__ == "__main__":
    main()
