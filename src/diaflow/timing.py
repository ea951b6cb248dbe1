"""A stopwatch for the seconds each step of a stage takes (reported in quality records)."""

from __future__ import annotations

import time

__all__ = ["Stopwatch"]


class Stopwatch:
    """Wall-clock laps: ``lap(name)`` adds the time since the previous lap to ``laps[name]``."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        """Record the time since the previous lap under ``name`` (repeated names add up)."""
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.last
        self.last = now

    @property
    def total(self) -> float:
        """Seconds since the stopwatch started."""
        return time.perf_counter() - self.start

    def done(self) -> dict[str, float]:
        """The laps and the ``total``."""
        return {**self.laps, "total": self.total}
