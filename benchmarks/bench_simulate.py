"""Benchmark the simulator's cost per visit: render one detector at several source densities.

For one detector of one visit (2048 x 2048; ``--quick``: 1024 x 1024) with the star and galaxy
densities of the ``default`` preset scaled x0.25, x1 and x4 (``--quick``: x1, x4), it reports, per
density (keys ``x<scale>.*``):

* ``render_s``: median seconds of :func:`diaflow.sim.render.render_detector` (GalSim stamps, sky,
  noise, artifacts, mask and variance planes) over 3 repeats (``--quick``: 2); the sources drawn
  (stamps), ``s_per_1k_sources`` and ``marginal_s_per_1k_sources`` (the time above a render of the
  same visit with no sources, ``no_sources.render_s``, per 1000 sources drawn);
* ``render_over_baseline``: the render time over a baseline measured in the same run,
  ``baseline.noise_only_s`` (a sky + Poisson + read-noise image of the same size made with numpy
  as ``render_detector`` makes it) plus ``baseline.fits_write_s`` (writing the rendered exposure
  with :func:`diaflow.image.write_exposure`, into the page cache: no fsync); also the ratio to the
  noise-only image alone. These cheap figures take the median of 5 repeats;
* ``peak_rss_mib``: the peak resident memory of a fresh process rendering the visit and writing its
  FITS file, and ``visit_peak_increment_mib``: how far that peak rose above what the process held
  as the visit started (interpreter, libraries and inputs). One process per case, so peaks never
  mix; the noise-only image is measured the same way.

``growth_exponent_vs_sources`` is the log-log slope of (render - no-source render) against sources
drawn: 1 means linear growth.

Setup is untimed. The visit's inputs are exactly those :func:`simulate_survey` renders: the
plan of a one-detector, one-night survey (:func:`diaflow.sim.plan_survey`) and its first
visit's inputs (:func:`diaflow.sim.visit_inputs`), see :func:`prepare_case`. The first render
of a process also builds GalSim's lookup tables: it is reported apart
(``cold_first_render_s``), out of the medians.

Run it as ``diaflow bench simulate [--quick] [--json]`` or ``python benchmarks/bench_simulate.py``.
Benchmarks report; they never assert.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, measure_peak, median_seconds, run_fresh

FULL = {"shape": (2048, 2048), "scales": (0.25, 1.0, 4.0), "repeat": 3}
QUICK = {"shape": (1024, 1024), "scales": (1.0, 4.0), "repeat": 2}
CHEAP_REPEAT = 5
"""Repeats of the cheap measurements (noise-only image, FITS write, render without sources)."""
SEED = 42


def bench_config(shape: tuple[int, int], scale: float, seed: int = SEED) -> Any:
    """The ``default`` preset: one ``shape`` detector, one clear night, densities x ``scale``."""
    from diaflow.sim import preset

    sky = preset("default").sky
    return preset(
        "default",
        **{
            "seed": seed,
            "camera.n_detectors": 1,
            "camera.detector_shape": tuple(shape),
            "cadence.n_nights": 1,
            "cadence.weather_loss_fraction": 0.0,
            "sky.star_density_per_arcmin2": scale * sky.star_density_per_arcmin2,
            "sky.galaxy_density_per_arcmin2": scale * sky.galaxy_density_per_arcmin2,
        },
    )


@dataclass
class Case:
    """The inputs of one detector-visit, ready to render again and again."""

    scale: float
    inputs: dict[str, Any]
    """Keyword arguments of ``render_detector`` except ``rng``."""
    rng_state: dict[str, Any]
    """State of the visit's noise generator, so every repeat does the same work."""
    star_density: float = 0.0
    galaxy_density: float = 0.0

    def rng(self) -> np.random.Generator:
        rng = np.random.default_rng()
        rng.bit_generator.state = self.rng_state
        return rng

    def render(self) -> Any:
        from diaflow.sim.render import render_detector

        return render_detector(**self.inputs, rng=self.rng())


def prepare_case(shape: tuple[int, int], scale: float) -> Case:
    """The first visit of a one-detector survey, prepared exactly as ``simulate_survey`` does."""
    from diaflow.sim import detector_rng, plan_survey, visit_inputs

    config = bench_config(shape, scale)
    plan = plan_survey(config)
    visit = plan.visits.iloc[0]
    inputs = visit_inputs(plan, visit)
    sky = config.sky
    return Case(
        scale,
        {
            "visit": visit,
            "geometry": plan.detectors[0],
            "pointing": inputs.pointing,
            "psf": inputs.psf,
            "camera": config.camera,
            "render": config.render,
            "sources": inputs.sources,
        },
        detector_rng(config, 0, plan.detectors[0].detector).bit_generator.state,
        sky.star_density_per_arcmin2,
        sky.galaxy_density_per_arcmin2,
    )


def noise_only_image(
    shape: tuple[int, int],
    sky: float,
    gradient: tuple[float, float],
    read_noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sky + Poisson + read noise, made with numpy the way ``render_detector`` makes it."""
    from diaflow.sim.render import sky_model

    canvas = sky_model(shape, sky, gradient)
    return rng.poisson(canvas).astype(np.float64) + rng.normal(0.0, read_noise, shape)


def _measure_case(case: Case, repeat: int) -> tuple[float, Any]:
    """Median render seconds over ``repeat`` calls, and the last output."""
    last: dict[str, Any] = {}

    def once() -> None:
        last["out"] = case.render()

    return median_seconds(once, repeat), last["out"]


def _peak_child(job: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` in a fresh process (see :func:`_child`); return its memory figures in MiB."""
    with tempfile.TemporaryDirectory(prefix="diaflow-bench-") as tmp:
        path = Path(tmp) / "job.pkl"
        path.write_bytes(pickle.dumps(job))
        return run_fresh([str(Path(__file__).resolve()), "--measure-child", str(path)])


def _child(job_path: str) -> None:
    """The measured process: load the job, then measure the peak memory of doing it once.

    Every kind of job imports the same libraries before the measurement starts, so the increment
    is what the work itself adds to a process that already holds them and the job's inputs.
    """
    import diaflow.sim.render  # noqa: F401  (galsim, astropy, pandas: loaded before measuring)
    from diaflow.image import write_exposure

    job = pickle.loads(Path(job_path).read_bytes())
    if job["what"] == "render":
        case = Case(job["scale"], job["inputs"], job["rng_state"])

        def work() -> None:
            out = case.render()
            with tempfile.TemporaryDirectory(prefix="diaflow-bench-") as tmp:
                write_exposure(out.exposure, Path(tmp) / "visit.fits")
    else:

        def work() -> None:
            noise_only_image(
                job["shape"],
                job["sky"],
                job["gradient"],
                job["read_noise"],
                np.random.default_rng(0),
            )

    print(json.dumps(measure_peak(work)))


def run(quick: bool = False) -> dict[str, object]:
    """Time and measure rendering one detector-visit; return flat figures (see the module doc).

    Keys: ``env.*`` (where), ``baseline.*``, ``no_sources.*`` (the visit rendered with no source),
    ``x<scale>.*`` (densities x scale), ``growth_exponent_vs_sources``, ``cold_first_render_*``.
    """
    from diaflow.image import write_exposure

    t_start = time.perf_counter()
    spec = QUICK if quick else FULL
    shape, scales, repeat = spec["shape"], spec["scales"], spec["repeat"]
    cheap_repeat = max(repeat, CHEAP_REPEAT)
    figures: dict[str, object] = {f"env.{k}": v for k, v in environment().items()}

    cases = [prepare_case(shape, s) for s in scales]
    visit, camera = cases[0].inputs["visit"], cases[0].inputs["camera"]
    figures.update(
        {
            "detector_shape": f"{shape[0]}x{shape[1]}",
            "repeats": repeat,
            "repeats_baseline": cheap_repeat,
            "seed": SEED,
            "visit.band": str(visit["band"]),
            "visit.seeing_fwhm_arcsec": float(visit["seeing_fwhm_arcsec"]),
        }
    )

    # The first render of a process also builds GalSim's tables: report it, keep it out of medians.
    t0 = time.perf_counter()
    cases[0].render()
    cold_s = time.perf_counter() - t0

    # Every case is timed before any baseline, all in this process, one after the other.
    timed = [(case, *_measure_case(case, repeat)) for case in cases]
    ref = next((out for case, _, out in timed if case.scale == 1.0), timed[0][2])

    # Baseline: a noise-only image of the same size and sky, and writing the FITS file; and the
    # same visit rendered with no sources at all (the fixed cost of a render).
    noise_s = median_seconds(
        lambda: noise_only_image(
            shape, ref.sky_e_per_px, ref.sky_gradient, camera.read_noise_e, np.random.default_rng(0)
        ),
        cheap_repeat,
    )
    with tempfile.TemporaryDirectory(prefix="diaflow-bench-") as tmp:
        path = Path(tmp) / "visit.fits"
        write_s = median_seconds(
            lambda: write_exposure(ref.exposure, path, overwrite=True), cheap_repeat
        )
        fits_mib = path.stat().st_size / 2**20
    baseline_s = noise_s + write_s
    noise_mem = _peak_child(
        {
            "what": "noise",
            "shape": shape,
            "sky": ref.sky_e_per_px,
            "gradient": ref.sky_gradient,
            "read_noise": camera.read_noise_e,
        }
    )
    empty_inputs = {**cases[0].inputs, "sources": cases[0].inputs["sources"].iloc[:0]}
    empty_s, _ = _measure_case(Case(0.0, empty_inputs, cases[0].rng_state), cheap_repeat)
    figures.update(
        {
            "baseline.noise_only_s": noise_s,
            "baseline.fits_write_s": write_s,
            "baseline.fits_file_mib": fits_mib,
            "baseline.total_s": baseline_s,
            "baseline.noise_peak_rss_mib": noise_mem["peak_rss_mib"],
            "baseline.noise_peak_increment_mib": noise_mem["increment_mib"],
            "no_sources.render_s": empty_s,
            "no_sources.render_over_baseline": empty_s / baseline_s,
        }
    )

    # Each density: sources, time, time per source, ratio to the baseline, peak memory.
    for case, render_s, out in timed:
        sources = case.inputs["sources"]
        kind = sources.set_index("id").loc[out.sources["id"].to_numpy(), "kind"].to_numpy()
        n = len(out.sources)
        mem = _peak_child(
            {
                "what": "render",
                "scale": case.scale,
                "inputs": case.inputs,
                "rng_state": case.rng_state,
            }
        )
        key = f"x{case.scale:g}"
        figures.update(
            {
                f"{key}.star_density_per_arcmin2": case.star_density,
                f"{key}.galaxy_density_per_arcmin2": case.galaxy_density,
                f"{key}.sources_in_field": len(sources),
                f"{key}.sources_drawn": n,
                f"{key}.galaxies_drawn": int((kind == "galaxy").sum()),
                f"{key}.stars_drawn": int((kind == "star").sum()),
                f"{key}.render_s": render_s,
                f"{key}.s_per_1k_sources": 1000 * render_s / n if n else None,
                f"{key}.marginal_s_per_1k_sources": 1000 * (render_s - empty_s) / n if n else None,
                f"{key}.render_over_baseline": render_s / baseline_s,
                f"{key}.render_over_noise_only": render_s / noise_s,
                f"{key}.peak_rss_mib": mem["peak_rss_mib"],
                f"{key}.visit_peak_increment_mib": mem["increment_mib"],
            }
        )

    # Growth: exponent of (render - no-source render) against sources drawn; 1 is linear.
    n_drawn = np.array([len(out.sources) for _, _, out in timed], float)
    extra = np.array([t for _, t, _ in timed]) - empty_s
    if len(timed) >= 2 and (n_drawn > 0).all() and (extra > 0).all() and np.ptp(n_drawn) > 0:
        figures["growth_exponent_vs_sources"] = float(
            np.polyfit(np.log(n_drawn), np.log(extra), 1)[0]
        )
    figures["cold_first_render_s"] = cold_s
    figures["cold_first_render_extra_s"] = cold_s - timed[0][1]
    figures["bench_wall_s"] = time.perf_counter() - t_start
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1024 x 1024, two densities, 2 repeats"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--measure-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_child:
        _child(args.measure_child)
        return
    figures = run(quick=args.quick)
    if args.json:
        print(json.dumps(figures, default=str))
        return
    width = max(map(len, figures))
    for key, value in figures.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")


if __name__ == "__main__":
    main()
