"""SQLite storage: group commit, per-write isolation inside a batch, migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.domain.errors import StorageUnavailable
from service.domain.records import ApiKey, Task
from service.domain.transitions import Decision
from service.storage import DuplicateIdempotencyKey, Event, open_storage, sqlite_path
from service.storage.sqlite import SQLiteStorage
from service.storage.sqlite.backend import FAST_READ_CACHE_KIB
from service.storage.sqlite.migrations import LATEST
from tests.unit.conftest import relay_settings

NOW = 1_700_000_000.0
KEY = ApiKey("key_1", "tests", "grk_abcdefgh", NOW)


def make_task(n: int, **changes: Any) -> Task:
    """A pending task numbered `n`, owned by `KEY`."""
    values: dict[str, Any] = {
        "id": f"task_{n}",
        "api_key_id": KEY.id,
        "model": "nano-banana",
        "endpoint": "/v1/draw/nano-banana",
        "mode": "poll",
        "input": {"model": "nano-banana", "prompt": f"fox {n}"},
        "created_at": NOW,
        "updated_at": NOW,
        "upstream_id": f"16-{n}",
        "submit_state": "submitted",
        **changes,
    }
    return Task(**values)


def bump(task: Task) -> Decision:
    """Count one more poll attempt (a read-modify-write that must not lose updates)."""
    return Decision("applied", {"poll_attempts": task.poll_attempts + 1})


@pytest.fixture(name="storage")
async def _storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(str(tmp_path / "store.db"), batch_max=256)
    await storage.open()
    await storage.create_api_key(KEY, b"h" * 32)
    try:
        yield storage
    finally:
        await storage.close()


async def test_concurrent_applies_all_commit(storage: SQLiteStorage) -> None:
    """200 concurrent read-modify-write applies all succeed and none is lost."""
    await storage.insert_task(make_task(1))
    events = [Event("task_1", "poll", NOW + n, f"body {n}".encode()) for n in range(200)]
    results = await asyncio.gather(*(storage.apply("task_1", bump, e) for e in events))
    assert all(r is not None and r[0].outcome == "applied" for r in results)
    counts = sorted(r[1].poll_attempts for r in results if r is not None)
    assert counts == list(range(1, 201))
    task = await storage.task("task_1")
    assert task is not None
    assert task.poll_attempts == 200
    stored = await storage.events("task_1")
    assert sorted(e.body for e in stored) == sorted(e.body for e in events)
    assert {e.outcome for e in stored} == {"applied"}


async def test_concurrent_applies_over_many_tasks(storage: SQLiteStorage) -> None:
    """200 concurrent applies spread over 20 tasks are all visible afterwards."""
    for n in range(20):
        await storage.insert_task(make_task(n))
    await asyncio.gather(*(storage.apply(f"task_{n % 20}", bump, None) for n in range(200)))
    for n in range(20):
        task = await storage.task(f"task_{n}")
        assert task is not None
        assert task.poll_attempts == 10


async def test_small_batches_still_commit_everything(tmp_path: Path) -> None:
    """With a tiny write_batch_max, queued writes are split into batches and all commit."""
    storage = SQLiteStorage(str(tmp_path / "small.db"), batch_max=3)
    await storage.open()
    try:
        await storage.create_api_key(KEY, b"k" * 32)
        await asyncio.gather(*(storage.insert_task(make_task(n)) for n in range(50)))
        page = await storage.list_tasks(KEY.id, status=None, model=None, limit=100, before_seq=None)
        assert len(page) == 50
    finally:
        await storage.close()


async def test_failing_decide_fails_only_its_caller(storage: SQLiteStorage) -> None:
    """A decide that raises inside a batch fails only its own caller; the rest commit."""
    await storage.insert_task(make_task(1))

    def explode(task: Task) -> Decision:
        raise ValueError("decide blew up")

    ops = [
        storage.apply(
            "task_1", explode if n == 5 else bump, Event("task_1", "poll", NOW, b"%d" % n)
        )
        for n in range(10)
    ]
    results = await asyncio.gather(*ops, return_exceptions=True)
    assert isinstance(results[5], ValueError)
    assert str(results[5]) == "decide blew up"
    assert all(not isinstance(r, BaseException) for n, r in enumerate(results) if n != 5)
    task = await storage.task("task_1")
    assert task is not None
    assert task.poll_attempts == 9
    assert sorted(e.body for e in await storage.events("task_1")) == sorted(
        b"%d" % n for n in range(10) if n != 5
    )


async def test_constraint_violation_rolls_back_only_its_write(storage: SQLiteStorage) -> None:
    """A write that breaks a constraint after writing is rolled back alone (savepoint)."""
    await storage.insert_task(make_task(1))

    def too_far(task: Task) -> Decision:
        return Decision("applied", {"status": "running", "progress": 150})

    bad = storage.apply("task_1", too_far, Event("task_1", "callback", NOW, b"bad"))
    good = [storage.apply("task_1", bump, Event("task_1", "poll", NOW, b"good")) for _ in range(5)]
    results = await asyncio.gather(bad, *good, return_exceptions=True)
    assert isinstance(results[0], sqlite3.IntegrityError)
    assert all(not isinstance(r, BaseException) for r in results[1:])
    task = await storage.task("task_1")
    assert task is not None
    assert (task.status, task.progress, task.poll_attempts) == ("pending", 0, 5)
    assert [e.body for e in await storage.events("task_1")] == [b"good"] * 5


async def test_unknown_column_is_refused(storage: SQLiteStorage) -> None:
    """A decision naming a column that does not exist is refused, not interpolated into SQL."""
    await storage.insert_task(make_task(1))

    def sneaky(task: Task) -> Decision:
        return Decision("applied", {"status = 'failed' --": 1})

    with pytest.raises(ValueError, match="unknown task columns"):
        await storage.apply("task_1", sneaky, None)
    task = await storage.task("task_1")
    assert task is not None
    assert task.status == "pending"


async def test_apply_on_missing_task_returns_none(storage: SQLiteStorage) -> None:
    """Applying to a task that does not exist returns None and stores no event."""
    assert await storage.apply("task_nope", bump, Event("task_nope", "poll", NOW, b"x")) is None
    assert await storage.events("task_nope") == []


async def test_event_outcome_defaults_to_the_decision(storage: SQLiteStorage) -> None:
    """An event without its own outcome is stored with the decision's outcome and detail."""
    await storage.insert_task(make_task(1))
    await storage.apply(
        "task_1", lambda t: Decision("stale", detail="old news"), Event("task_1", "poll", NOW, b"a")
    )
    await storage.apply(
        "task_1",
        lambda t: Decision("applied", {"progress": 5}),
        Event("task_1", "callback", NOW, b"b", outcome="rejected", detail="forged"),
    )
    events = await storage.events("task_1")
    assert [(e.outcome, e.detail) for e in events] == [
        ("stale", "old news"),
        ("rejected", "forged"),
    ]


async def test_duplicate_idempotency_key(storage: SQLiteStorage) -> None:
    """A second task with the same (api key, Idempotency-Key) raises DuplicateIdempotencyKey."""
    await storage.insert_task(make_task(1, idempotency_key="k"))
    with pytest.raises(DuplicateIdempotencyKey):
        await storage.insert_task(make_task(2, idempotency_key="k"))
    await storage.insert_task(make_task(3, idempotency_key=None))
    await storage.insert_task(make_task(4, idempotency_key=None))
    found = await storage.task_by_idempotency_key(KEY.id, "k")
    assert found is not None
    assert found.id == "task_1"


async def test_json_columns_round_trip(storage: SQLiteStorage) -> None:
    """input, results and metadata come back as the JSON values stored."""
    task = make_task(
        1,
        input={"model": "m", "prompt": "ü€😀", "urls": ["https://a.test/x"]},
        metadata={"nested": {"list": [1, 2.5, None, True]}},
        results=[{"url": "https://r.test/a.png", "width": 1, "height": 2}],
        token_hash=b"\x00\xff" * 16,
    )
    await storage.insert_task(task)
    stored = await storage.task("task_1")
    assert stored is not None
    assert stored.input == task.input
    assert stored.metadata == task.metadata
    assert stored.results == task.results
    assert stored.token_hash == task.token_hash
    assert await storage.task("task_1", "key_other") is None


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    """Once closed, storage refuses writes with StorageUnavailable."""
    storage = SQLiteStorage(str(tmp_path / "closed.db"))
    await storage.open()
    await storage.close()
    with pytest.raises(StorageUnavailable):
        await storage.insert_task(make_task(1))


async def test_close_commits_queued_writes(tmp_path: Path) -> None:
    """Writes queued before close are committed, not dropped."""
    path = str(tmp_path / "queued.db")
    storage = SQLiteStorage(path)
    await storage.open()
    await storage.create_api_key(KEY, b"q" * 32)
    pending = [asyncio.create_task(storage.insert_task(make_task(n))) for n in range(30)]
    await asyncio.sleep(0)
    await storage.close()
    await asyncio.gather(*pending)
    reopened = SQLiteStorage(path)
    await reopened.open()
    try:
        page = await reopened.list_tasks(KEY.id, status=None, model=None, limit=50, before_seq=None)
        assert len(page) == 30
    finally:
        await reopened.close()


# --- migrations -----------------------------------------------------------------------------


async def test_schema_is_latest(storage: SQLiteStorage) -> None:
    """A fresh database is migrated to the latest schema version."""
    assert await storage.schema_version() == LATEST
    await storage.ping()


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    """Opening the same database twice re-applies nothing and keeps the data."""
    path = str(tmp_path / "twice.db")
    for _ in range(3):
        storage = SQLiteStorage(path)
        await storage.open()
        try:
            assert await storage.schema_version() == LATEST
            if not await storage.list_api_keys():
                await storage.create_api_key(KEY, b"m" * 32)
                await storage.insert_task(make_task(1))
            assert [k.id for k in await storage.list_api_keys()] == [KEY.id]
            assert await storage.task("task_1") is not None
        finally:
            await storage.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database migrated by newer code is refused rather than misread."""
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    storage = SQLiteStorage(str(path))
    with pytest.raises(StorageUnavailable, match="newer"):
        await storage.open()
    await storage.close()


def test_backend_is_chosen_by_url(tmp_path: Path) -> None:
    """sqlite:/// URLs open SQLite; other schemes and in-memory databases are refused."""
    storage = open_storage(relay_settings(tmp_path))
    assert isinstance(storage, SQLiteStorage)
    assert storage.path == f"{tmp_path}/t.db"
    assert sqlite_path("sqlite:///data/x.db") == "data/x.db"
    assert sqlite_path("sqlite:////abs/x.db") == "/abs/x.db"
    for bad in ("sqlite:///:memory:", "sqlite://", "sqlite:///", "postgres://x"):
        with pytest.raises(ValueError, match=r"(?i)sqlite"):
            sqlite_path(bad)
    with pytest.raises(ValueError, match="unsupported"):
        open_storage(relay_settings(tmp_path, database_url="mysql://x/y"))


async def test_point_reads_keep_interior_pages_cached(storage: SQLiteStorage) -> None:
    """The point-read connection's page cache is large enough for a big database's interior
    B-tree pages (SQLite's 2 MiB default is not)."""
    assert storage._fast is not None
    cache = storage._fast.execute("PRAGMA cache_size").fetchone()[0]
    assert cache == -FAST_READ_CACHE_KIB
    assert FAST_READ_CACHE_KIB >= 8192
