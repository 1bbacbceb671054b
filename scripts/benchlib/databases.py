"""The databases a relay runs on in the benchmark: a SQLite file, or a PostgreSQL database
(`benchlib.pg`). Scenarios read both the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from benchlib.plan import PlanTask
from benchlib.probes import count_rows, outcomes
from benchlib.seed import file_bytes, reschedule


class Database(Protocol):
    """A database a relay is started on, and what the benchmark reads off it."""

    @property
    def url(self) -> str:
        """The relay's DATABASE_URL."""

    @property
    def asset_dir(self) -> Path:
        """Where the relay on it stores result files."""

    def outcomes(self) -> dict[str, int]:
        """Stored callbacks by outcome."""

    def count_rows(self, table: str) -> int:
        """Rows in `table`."""

    def size(self) -> int:
        """Bytes the database takes."""

    def reschedule(self, tasks: list[PlanTask], now: float, silence: float) -> None:
        """Make `tasks` due for polls within the callback silence window (`seed.reschedule`)."""


@dataclass(frozen=True, slots=True)
class SqliteDb:
    """A SQLite file."""

    path: Path

    @property
    def url(self) -> str:
        """`sqlite:////absolute/path`."""
        return f"sqlite:///{self.path}"

    @property
    def asset_dir(self) -> Path:
        """`assets/` beside the file."""
        return self.path.parent / "assets"

    def outcomes(self) -> dict[str, int]:
        """Read-only, while the relay may run."""
        return outcomes(self.path)

    def count_rows(self, table: str) -> int:
        """Read-only, while the relay may run."""
        return count_rows(self.path, table)

    def size(self) -> int:
        """The file with its WAL."""
        return file_bytes(self.path)

    def reschedule(self, tasks: list[PlanTask], now: float, silence: float) -> None:
        """Straight into the file, before the relay starts."""
        reschedule(self.path, tasks, now, silence)
