"""The backend e2e tests run their relays on, and the databases one test's relays use.

`RELAY_TEST_BACKEND` names the backend: `sqlite` (the default, a file in the test's folder) or
`postgresql` (a database of its own on the test server, see `tests/pgserver.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import pgserver

BACKENDS = ("sqlite", "postgresql")


def backend_under_test() -> str:
    """The backend of the relays e2e tests start: env `RELAY_TEST_BACKEND`, `sqlite` by default."""
    backend = os.environ.get("RELAY_TEST_BACKEND") or "sqlite"
    if backend not in BACKENDS:
        raise pytest.UsageError(f"RELAY_TEST_BACKEND={backend!r}: use one of {', '.join(BACKENDS)}")
    return backend


class Databases:
    """The databases of one test's relays, by name, on the backend under test.

    Relays that ask for the same name share a database (a restarted relay keeps its own);
    PostgreSQL databases are made on first use and all dropped by `drop_all()`.
    """

    def __init__(self, folder: Path, backend: str | None = None) -> None:
        self.folder = folder
        self.backend = backend or backend_under_test()
        self._made: dict[str, str] = {}

    def url(self, name: str = "relay.db") -> str:
        """The `DATABASE_URL` of the database called `name` (SQLite: a file in the folder)."""
        if self.backend == "sqlite":
            return f"sqlite:///{self.folder / name}"
        if name not in self._made:
            self._made[name] = pgserver.create_database()
        return self._made[name]

    def drop_all(self) -> None:
        """Drop every PostgreSQL database made here (SQLite files go with the test's folder)."""
        while self._made:
            pgserver.drop_database(self._made.popitem()[1])
