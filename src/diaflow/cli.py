"""The ``diaflow`` command: parse options, build a configuration, call one library function, report.

Sub-commands: ``demo``, ``simulate``, ``template build``, ``night run``, ``bench``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .errors import DiaflowError

app = typer.Typer(
    help="diaflow: prompt (Level 1) processing for a time-domain survey.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
template_app = typer.Typer(help="Templates for the nightly pipeline.", no_args_is_help=True)
night_app = typer.Typer(help="Nightly prompt processing.", no_args_is_help=True)
app.add_typer(template_app, name="template")
app.add_typer(night_app, name="night")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code=2)


def _survey_config(
    preset_name: str,
    config_file: Path | None,
    seed: int | None,
    nights: int | None,
    opsim: str | None,
) -> Any:
    from .sim import SurveyConfig, preset

    cfg = SurveyConfig.from_toml(config_file) if config_file else preset(preset_name)
    changes: dict[str, Any] = {}
    if seed is not None:
        changes["seed"] = seed
    if nights is not None:
        changes["cadence.n_nights"] = nights
    if opsim is not None:
        changes["cadence.opsim_path"] = opsim
    return cfg.replace(**changes) if changes else cfg


def _simulate(cfg: Any, out: Path, overwrite: bool) -> Any:
    from .sim import simulate_survey

    with _progress() as progress:
        task = progress.add_task("simulate", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return simulate_survey(cfg, out, overwrite=overwrite, on_progress=on_progress)


def _summary(result: Any) -> Table:
    table = Table(title=f"simulated survey in {result.out_dir}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, value in (
        ("visits", result.n_visits),
        ("exposures (visit x detector)", result.n_exposures),
        ("stars + galaxies", result.n_static),
        ("transients", result.n_transients),
        ("solar-system objects", result.n_sso),
        ("fields (RA, Dec)", ", ".join(f"({a:.3f}, {b:.3f})" for a, b in result.fields)),
        ("wall time", f"{result.seconds:.1f} s"),
    ):
        table.add_row(name, str(value))
    return table


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Output directory (must be empty or new).")] = Path(
        "survey"
    ),
    preset_name: Annotated[
        str, typer.Option("--preset", help="quick | default | stress")
    ] = "default",
    config: Annotated[
        Path | None, typer.Option(help="TOML configuration file (overrides --preset).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Master random seed.")] = None,
    nights: Annotated[int | None, typer.Option(help="Number of nights.")] = None,
    opsim: Annotated[
        str | None,
        typer.Option(
            help="Follow a real schedule: an OpSim database path, or 'sorcha' for Rubin's baseline."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output directory.")] = False,
    plot: Annotated[bool, typer.Option(help="Draw overview.png.")] = True,
) -> None:
    """Simulate a survey: post-ISR exposures, visit table, reference catalog and truth tables."""
    try:
        cfg = _survey_config(preset_name, config, seed, nights, opsim)
        result = _simulate(cfg, out, overwrite)
    except DiaflowError as exc:
        _fail(exc)
        return
    console.print(_summary(result))
    if plot:
        from .sim.plots import plot_survey

        console.print(f"overview: {plot_survey(out)}")


@app.command()
def demo(
    quick: Annotated[
        bool, typer.Option(help="Eight nights instead of three weeks (a few minutes).")
    ] = False,
    out: Annotated[Path, typer.Option(help="Working directory of the demo.")] = Path(
        "diaflow-demo"
    ),
) -> None:
    """Run diaflow end to end: simulate a few weeks, build templates, run every night."""
    from .sim import preset

    n_nights, template_nights = (8, 4) if quick else (21, 6)
    cfg = preset(
        "quick",
        **{
            "cadence.n_nights": n_nights,
            "camera.detector_shape": (1024, 1024),
            "camera.n_detectors": 1,
            # A field with enough bright stars to calibrate and PSF-match every visit.
            "sky.star_density_per_arcmin2": 25.0,
            "sky.star_count_slope": 0.12,
        },
    )
    t0 = time.perf_counter()
    try:
        result = _simulate(cfg, out / "survey", overwrite=True)
    except DiaflowError as exc:
        _fail(exc)
        return
    console.print(_summary(result))
    from .sim.plots import plot_survey

    console.print(f"overview: {plot_survey(out / 'survey')}")
    repo = out / "repo"
    if repo.exists():
        import shutil

        shutil.rmtree(repo)
    _build_templates(_survey_inputs(out / "survey", range(template_nights)), out / "survey", repo)
    visits = _read_parquet(out / "survey" / "visits.parquet")
    rows = []
    for night in sorted(int(n) for n in visits["night"].unique() if n >= template_nights):
        summary = _run_night(
            _survey_inputs(out / "survey", [night]), out / "survey", repo, f"night-{night:03d}"
        )
        rows.append((night, summary.totals()))
    table = Table(title="nights (seconds: per visit, median; latency: file seen -> alerts out)")
    for col in ("night", "visits", "DiaSources", "new objects", "alerts", "quarantined",
                "s/visit", "latency p98"):  # fmt: skip
        table.add_column(col, justify="right")
    for night, t in rows:
        table.add_row(
            str(night), str(t["visits processed"]), str(t["DiaSources"]),
            str(t["new DiaObjects"]), str(t["alerts"]), str(t["quarantined"]),
            f"{t['seconds per visit (median)']:.1f}", f"{t['latency p98 (s)']:.1f}",
        )  # fmt: skip
    console.print(table)
    console.print(f"Level 1 database and alerts in {repo}")
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s")


def _read_parquet(path: Path) -> Any:
    import pandas as pd

    return pd.read_parquet(path)


def _survey_inputs(survey: Path, nights: Any) -> list[Path]:
    visits = _read_parquet(survey / "visits.parquet")
    chosen = visits[visits["night"].isin(list(nights))]
    return [survey / p for p in chosen["path"]]


def _refcat(survey: Path | None, refcat: Path | None) -> Any:
    path = refcat or (survey / "refcat.parquet" if survey else None)
    if path is None or not path.exists():
        _fail(FileNotFoundError("give --refcat (a Parquet reference catalog) or --survey"))
    return _read_parquet(path)


def _build_templates(inputs: list[Path], survey: Path | None, repo: Path) -> None:
    from .nightly.repo import Repo
    from .nightly.templates import build_templates

    with console.status("building templates") as status:
        entries = build_templates(
            inputs,
            Repo(repo),
            refcat=_refcat(survey, None),
            on_progress=lambda msg: status.update(f"building template {msg}"),
        )
    for e in entries:
        console.print(f"template {e.name}: band {e.band}, version {e.version}")


def _run_night(
    inputs: list[Path],
    survey: Path | None,
    repo: Path,
    label: str,
    refcat: Path | None = None,
    config: Any = None,
) -> Any:
    from .nightly.repo import Repo
    from .nightly.runner import run_night

    with _progress() as progress:
        task = progress.add_task(label, total=len(inputs))
        summary = run_night(
            inputs,
            Repo(repo),
            refcat=_refcat(survey, refcat),
            config=config,
            label=label,
            on_visit=lambda o: progress.advance(task),
        )
    return summary


def _parse_nights(nights: str) -> list[int]:
    out: list[int] = []
    for part in nights.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


@template_app.command("build")
def template_build(
    files: Annotated[list[Path] | None, typer.Argument(help="Exposure FITS files.")] = None,
    survey: Annotated[Path | None, typer.Option(help="A simulated survey directory.")] = None,
    nights: Annotated[str, typer.Option(help="Nights of the survey to use, e.g. 0-5.")] = "0-5",
    repo: Annotated[Path, typer.Option(help="Working area of the nightly pipeline.")] = Path(
        "repo"
    ),
) -> None:
    """Build one template per field and band from past exposures."""
    inputs = list(files or []) + (_survey_inputs(survey, _parse_nights(nights)) if survey else [])
    if not inputs:
        _fail(ValueError("no inputs: give FILES or --survey"))
    _build_templates(inputs, survey, repo)


@night_app.command("run")
def night_run(
    files: Annotated[list[Path] | None, typer.Argument(help="Exposure FITS files.")] = None,
    survey: Annotated[Path | None, typer.Option(help="A simulated survey directory.")] = None,
    night: Annotated[
        str | None, typer.Option(help="Night(s) of the survey, e.g. 7 or 6-9.")
    ] = None,
    repo: Annotated[Path, typer.Option(help="Working area of the nightly pipeline.")] = Path(
        "repo"
    ),
    refcat: Annotated[Path | None, typer.Option(help="Reference catalog (Parquet).")] = None,
    postgres: Annotated[
        str | None, typer.Option(help="PostgreSQL DSN: store the Level 1 database there.")
    ] = None,
    kafka: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers: also send alerts there.")
    ] = None,
    topic: Annotated[str, typer.Option(help="Kafka topic.")] = "alerts",
    avro: Annotated[
        bool, typer.Option("--avro/--no-avro", help="Write Avro alert files under the repo.")
    ] = True,
) -> None:
    """Process a night's visits in time order: store them and issue their alerts, exactly once."""
    from .alerts import SinkConfig
    from .l1db import L1DbConfig
    from .nightly.runner import NightConfig

    inputs = list(files or [])
    if survey is not None:
        inputs += _survey_inputs(survey, _parse_nights(night or "0-100000"))
    if not inputs:
        _fail(ValueError("no inputs: give FILES or --survey"))
    db = L1DbConfig(backend="postgres", dsn=postgres) if postgres else None
    sinks = SinkConfig(
        avro_dir=repo / "alerts" if avro else None,
        kafka_bootstrap=kafka,
        kafka_topic=topic,
        kafka_state_dir=repo / "kafka-state" if kafka else None,
    )
    config = NightConfig(l1db=db, sinks=sinks)
    label = f"night-{night}" if night else f"run-{time.strftime('%Y%m%dT%H%M%S')}"
    try:
        summary = _run_night(inputs, survey, repo, label, refcat, config)
    except DiaflowError as exc:
        _fail(exc)
        return
    table = Table(title=f"{label}: {len(inputs)} inputs")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in summary.totals().items():
        table.add_row(key, f"{value:.3g}" if isinstance(value, float) else str(value))
    console.print(table)
    stages = Table(title="median seconds per stage")
    stages.add_column("stage")
    stages.add_column("seconds", justify="right")
    for key, value in summary.stage_medians().items():
        stages.add_row(key, f"{value:.3f}")
    console.print(stages)
    for o in summary.outcomes:
        if o.status in ("quarantined", "deferred"):
            console.print(f"[yellow]{o.status}[/yellow] {o.path}: {o.reason}")


def _benchmarks_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "benchmarks"
    return here if here.is_dir() else Path.cwd() / "benchmarks"


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="Benchmark name: benchmarks/bench_<name>.py")],
    quick: Annotated[bool, typer.Option(help="Smaller sizes, for a quick look.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object of the figures.")
    ] = False,
) -> None:
    """Run a benchmark from benchmarks/ and print its table (or JSON)."""
    path = _benchmarks_dir() / f"bench_{name}.py"
    if not path.exists():
        known = sorted(p.stem.removeprefix("bench_") for p in _benchmarks_dir().glob("bench_*.py"))
        _fail(FileNotFoundError(f"no benchmark {name!r} in {path.parent}; known: {known}"))
    spec = importlib.util.spec_from_file_location(f"diaflow_bench_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    figures = module.run(quick=quick)
    if as_json:
        print(json.dumps(figures, default=str))
        return
    table = Table(title=f"benchmark {name}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Configure logging once, at the edge."""
    if version:
        console.print(f"diaflow {__version__}")
        raise typer.Exit()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
