"""What the benchmark reads off the servers it drives: RSS over time, rows in the database."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

from benchlib import procs


class RssSampler:
    """Samples a process's RSS from a thread while a block runs."""

    def __init__(self, pid: int, every: float) -> None:
        self.pid = pid
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, procs.rss_bytes(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def outcomes(db: Path) -> dict[str, int]:
    """Stored callbacks by outcome (read-only; the relay may be running)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        rows = conn.execute("SELECT outcome, count(*) FROM events GROUP BY outcome").fetchall()
    return {str(outcome): int(n) for outcome, n in rows}


def count_rows(db: Path, table: str) -> int:
    """Rows in a table."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608  # fixed name
    return int(row[0])
