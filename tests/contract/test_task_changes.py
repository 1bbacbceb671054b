"""Live status hook (`StorageOptions.on_task_change`): every backend names a task after a
committed change a client can see, and only then; on PostgreSQL the other handles sharing the
database hear it too (their notices), also for many tasks changed at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.domain.records import Task
from service.domain.transitions import Decision
from service.storage import Storage, StorageOptions, open_storage
from tests.contract.conftest import KEY, NOW, finishing, key_hash, make_task, postgresql_database

WAIT = 30.0  # hang guard: notices arrive in milliseconds


class Changes:
    """The task ids one handle was told of (None: any task may have changed)."""

    def __init__(self) -> None:
        self.ids: list[str | None] = []
        self.changed = asyncio.Event()

    def __call__(self, task_id: str | None) -> None:
        self.ids.append(task_id)
        self.changed.set()

    async def until(self, *task_ids: str) -> None:
        """Wait until each of `task_ids` was named."""
        async with asyncio.timeout(WAIT):
            while not set(task_ids) <= set(self.ids):
                self.changed.clear()
                await self.changed.wait()


async def _opened(url: str, changes: Changes) -> Storage:
    storage = open_storage(url, StorageOptions(on_task_change=changes))
    await storage.open()
    return storage


def _progress(value: int) -> Callable[[Task], Decision]:
    def decide(task: Task) -> Decision:
        return Decision("applied", {"status": "running", "progress": value, "updated_at": NOW})

    return decide


def _schedule_only(task: Task) -> Decision:
    return Decision("applied", {"next_poll_at": NOW + 30, "poll_attempts": 1})


async def test_seen_changes_are_named_once_committed(url: str) -> None:
    """A progress (the batched path), a final state with copies (the locking path) and a
    stored copy each name the task right after their write returned; a change of the poll
    schedule alone, or an apply to no task, names nothing."""
    changes = Changes()
    storage = await _opened(url, changes)
    try:
        await storage.create_api_key(KEY, key_hash(KEY))
        await storage.insert_task(make_task(1))
        await storage.apply("task_1", _schedule_only, None)
        await storage.apply("task_nope", _progress(5), None)
        assert [i for i in changes.ids if i is not None] == []
        await storage.apply("task_1", _progress(40), None)
        assert changes.ids[-1] == "task_1"
        await storage.apply("task_1", finishing("succeeded", NOW, "https://f.test/a"), None)
        assert changes.ids.count("task_1") == 2
        [asset] = await storage.claim_assets(NOW + 1, 5, NOW + 60)
        asset.status, asset.sha256 = "stored", "0" * 64
        await storage.save_asset(asset, NOW + 2)
        assert changes.ids.count("task_1") == 3
    finally:
        await storage.close()


@pytest.fixture(name="pg_url")
def _pg_url(tmp_path: Path) -> Iterator[str]:
    with postgresql_database(tmp_path) as url:
        yield url


async def test_other_handles_hear_of_every_changed_task(pg_url: str) -> None:
    """Changes written through one PostgreSQL handle, three hundred at once (batched writes
    sharing notices) and one through the locking path (it queues a copy), are named on
    another handle."""
    mine, theirs = Changes(), Changes()
    writer, listener = await _opened(pg_url, mine), await _opened(pg_url, theirs)
    try:
        await writer.create_api_key(KEY, key_hash(KEY))
        ids = [f"task_{n}" for n in range(300)]
        for n in range(300):
            await writer.insert_task(make_task(n))
        await asyncio.gather(*(writer.apply(i, _progress(10), None) for i in ids))
        await theirs.until(*ids)
        theirs.ids.clear()
        await writer.apply("task_0", finishing("succeeded", NOW, "https://f.test/a"), None)
        await theirs.until("task_0")
        assert set(mine.ids) == set(ids)  # told locally, not through its own notices
    finally:
        await writer.close()
        await listener.close()
