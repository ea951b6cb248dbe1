"""Helpers shared by the benchmarks: the environment, repeated timings, and peak memory.

Peak memory is measured in a fresh process per case (:func:`run_measured`), because a process's
peak resident set size only ever grows: measured in one process, a later, smaller case would
report the peak of an earlier, larger one.
"""

from __future__ import annotations

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

__all__ = ["environment", "maxrss_mib", "median_seconds", "run_measured", "timings"]

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
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=True)
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


def maxrss_mib(usage: Any) -> float:
    """``ru_maxrss`` of a ``resource.struct_rusage`` in MiB (Linux reports KiB, macOS bytes)."""
    return usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def run_measured(argv: Sequence[str]) -> tuple[dict[str, Any], float | None]:
    """Run ``python argv...`` in a fresh process; return (its JSON stdout, its peak RSS in MiB).

    The child must print one JSON object as the last line of its stdout. The peak comes from
    ``os.wait4`` on that very child, so peaks of successive cases never mix (unlike
    ``RUSAGE_CHILDREN``, which keeps the largest peak of all children waited for so far). Where
    ``os.wait4`` is missing (Windows) the peak is ``None``.
    """
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True)
    peak: float | None = None
    with proc:
        out = proc.stdout.read() if proc.stdout is not None else ""
        if hasattr(os, "wait4"):
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            peak = maxrss_mib(usage)
    if proc.returncode != 0:
        raise RuntimeError(f"measured child {list(argv)!r} exited with status {proc.returncode}")
    lines = out.strip().splitlines()
    return (json.loads(lines[-1]) if lines else {}), peak
