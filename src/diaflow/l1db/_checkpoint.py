"""Checkpoint a WAL database from a background thread, so that storing a visit never waits.

In WAL mode with ``synchronous=NORMAL`` a commit only appends to the log; the fsyncs happen when
the log is copied back into the database (a checkpoint). SQLite's automatic checkpoint runs
inside the commit that crosses its threshold, adding the disk's fsync latency to that visit.
Here the writer's automatic checkpoint is raised to a backstop and a thread with its own
connection runs ``PRAGMA wal_checkpoint(PASSIVE)`` after commits: it never blocks the writer or
readers, and durability is unchanged (a commit is still durable once the log is synced).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

BACKSTOP_PAGES = 50_000
"""The writer checkpoints by itself only if the log reaches this many pages (~200 MB)."""

EVERY_COMMITS = 16
"""Checkpoint after this many commits: fewer, larger checkpoints copy a page changed by several
visits once, and the writer syncs the log header (when it starts reusing the log) less often."""


class Checkpointer:
    """A daemon thread that checkpoints ``path`` when poked (after each commit)."""

    def __init__(self, path: Path, *, busy_timeout_ms: int) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._wake = threading.Event()
        self._commits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"checkpoint {path.name}", daemon=True
        )
        self._thread.start()

    def poke(self) -> None:
        """Count a commit; every ``EVERY_COMMITS`` of them, ask for a checkpoint."""
        self._commits += 1
        if self._commits % EVERY_COMMITS == 0:
            self._wake.set()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            while not self._stop.is_set():
                self._wake.wait(60.0)
                self._wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # the writer's backstop still bounds the log
                    logger.warning("background checkpoint of %s failed: %s", self.path, exc)
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the thread (the writer's close checkpoints what is left)."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
