"""The ``diaflow`` command: parse options, build a configuration, call one library function, report.

Sub-commands: ``demo``, ``simulate``, ``bench``. Later stages add theirs.
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
        bool, typer.Option(help="A smaller demo that finishes in well under 2 minutes.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Working directory of the demo.")] = Path(
        "diaflow-demo"
    ),
) -> None:
    """Run diaflow end to end on embedded defaults: today, simulate a small survey and show it."""
    from .sim import preset

    cfg = (
        preset("quick")
        if quick
        else preset(
            "quick",
            **{
                "camera.detector_shape": (1024, 1024),
                "cadence.n_nights": 14,
                "cadence.bands": ("g", "r", "i"),
            },
        )
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
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s")


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
