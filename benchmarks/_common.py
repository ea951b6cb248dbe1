"""Helpers shared by the benchmarks: the environment, repeated timings, and peak memory.

Peak memory is measured in a fresh process per case (:func:`run_fresh` running code that calls
:func:`measure_peak`), so that the peaks of different cases, and the benchmark's own memory, never
mix into one another.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["environment", "measure_peak", "median_seconds", "run_fresh", "timings"]

REPO = Path(__file__).resolve().parents[1]


def environment() -> dict[str, object]:
    """Where the figures were taken: CPU count, platform, Python, key versions, git commit."""
    env: dict[str, object] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    for dist in ("diaflow", "numpy", "galsim", "astropy"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    env["git_commit"] = _git("rev-parse", "--short", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    env["git_dirty"] = None if status is None else bool(status)
    return env


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def timings(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall-clock seconds of ``repeat`` calls of ``fn`` (``time.perf_counter``)."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median wall-clock seconds of ``repeat`` calls of ``fn``."""
    return statistics.median(timings(fn, repeat))


def _status_mib(field: str) -> float | None:
    """A ``kB`` line of ``/proc/self/status`` (Linux) in MiB, or ``None``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _maxrss_self_mib() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def measure_peak(fn: Callable[[], object]) -> dict[str, float | None]:
    """Peak resident memory (MiB) while ``fn`` runs; call it in a fresh process.

    On Linux the peak is ``VmHWM`` of ``/proc/self/status``, reset to the current size just before
    ``fn`` (``/proc/self/clear_refs``), so it is the peak of ``fn`` alone. Elsewhere it is
    ``ru_maxrss``, which also counts whatever ran before ``fn``; the increment is then ``None``
    when ``fn`` did not raise the peak. ``ru_maxrss`` is not used on Linux: a child inherits its
    parent's high-water mark at ``exec``, so it reports the benchmark's own size, not the child's.

    Returns ``rss_before_mib`` (resident when ``fn`` started), ``peak_rss_mib`` and
    ``increment_mib`` (their difference: what ``fn`` added at its peak).
    """
    gc.collect()
    before = _status_mib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from the current size
    except OSError:
        before = None
    if before is not None:
        fn()
        peak = _status_mib("VmHWM")
        return {
            "rss_before_mib": before,
            "peak_rss_mib": peak,
            "increment_mib": None if peak is None else peak - before,
        }
    before_max = _maxrss_self_mib()
    fn()
    peak_max = _maxrss_self_mib()
    return {
        "rss_before_mib": None,
        "peak_rss_mib": peak_max,
        "increment_mib": peak_max - before_max if peak_max > before_max else None,
    }


def run_fresh(argv: Sequence[str]) -> dict[str, Any]:
    """Run ``python argv...`` in a fresh process and return the JSON object it prints last.

    One process per case keeps the peaks of different cases apart; the child measures itself
    with :func:`measure_peak`.
    """
    done = subprocess.run([sys.executable, *argv], stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {list(argv)!r} exited with status {done.returncode}")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}
