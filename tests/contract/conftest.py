"""The storage contract suite: every test runs against every backend, SQLite and PostgreSQL.

A backend joins by adding to `BACKENDS` a context manager that yields a fresh, empty database's
URL and removes the database afterwards. SQLite: a file in the test's `tmp_path`. PostgreSQL: a
database of its own on the test server (`tests/pgserver.py`, `TEST_POSTGRES_URL`), dropped when
the test ends; an unreachable server fails the test, never skips it. Tests speak only the
`Storage` protocol and `service.storage`'s functions, never a backend's own API.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.domain.outbox import final_event
from service.domain.records import ApiKey, Task
from service.domain.transitions import Decision
from service.storage import Storage, open_storage
from tests import pgserver


@contextlib.contextmanager
def sqlite_database(folder: Path) -> Iterator[str]:
    """A SQLite file in the test's own folder (pytest removes the folder)."""
    yield f"sqlite:///{folder}/contract.db"


@contextlib.contextmanager
def postgresql_database(_folder: Path) -> Iterator[str]:
    """A database of its own on the test PostgreSQL server, dropped afterwards."""
    with pgserver.fresh_database() as url:
        yield url


BACKENDS: dict[str, Callable[[Path], contextlib.AbstractContextManager[str]]] = {
    "sqlite": sqlite_database,
    "postgresql": postgresql_database,
}
NOW = 1_700_000_000.0
KEY = ApiKey("key_main", "main", "grk_main0000", NOW)
OTHER = ApiKey("key_other", "other", "grk_other000", NOW + 1)
Reopen = Callable[[], Awaitable[Storage]]


def key_hash(key: ApiKey) -> bytes:
    """A stand-in for the SHA-256 of a key's secret."""
    return key.id.encode().ljust(32, b"#")


def make_task(n: int | str, **changes: Any) -> Task:
    """A pending task `task_<n>` owned by `KEY`, submitted as GrsAI task `up-<n>`."""
    values: dict[str, Any] = {
        "id": f"task_{n}",
        "api_key_id": KEY.id,
        "model": "nano-banana",
        "endpoint": "/v1/draw/nano-banana",
        "mode": "poll",
        "input": {"model": "nano-banana", "prompt": f"fox {n}"},
        "created_at": NOW,
        "updated_at": NOW,
        "upstream_id": f"up-{n}",
        "submit_state": "submitted",
        **changes,
    }
    return Task(**values)


def finishing(status: str, at: float, *copies: str) -> Callable[[Task], Decision]:
    """A decide that makes the task final at `at`, as the state machine does (copies, event)."""

    def decide(task: Task) -> Decision:
        event = final_event(
            task.id, task.api_key_id, status, task.callback_url, at, copies_pending=bool(copies)
        )
        results = [
            {"url": None, "upstream_url": url, "asset": {"status": "pending"}} for url in copies
        ]
        changes = {"status": status, "completed_at": at, "updated_at": at, "next_poll_at": None}
        if copies:
            changes["results"] = results
        return Decision("applied", changes, copies=copies, final_event=event)

    return decide


@pytest.fixture(name="url", params=sorted(BACKENDS))
def _url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of each backend in turn; storages opened on it close before it goes."""
    with BACKENDS[request.param](tmp_path) as url:
        yield url


@pytest.fixture(name="storage")
async def _storage(url: str) -> AsyncIterator[Storage]:
    storage = open_storage(url)
    await storage.open()
    await storage.create_api_key(KEY, key_hash(KEY))
    await storage.create_api_key(OTHER, key_hash(OTHER))
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture(name="reopen")
async def _reopen(url: str) -> AsyncIterator[Reopen]:
    opened: list[Storage] = []

    async def reopen() -> Storage:
        storage = open_storage(url)
        await storage.open()
        opened.append(storage)
        return storage

    try:
        yield reopen
    finally:
        for storage in opened:
            await storage.close()
