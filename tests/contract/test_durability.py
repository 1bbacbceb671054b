"""The contract's crash-safety promises: an acknowledged write is there for whoever opens the
database next, even if the instance that wrote it never shut down; and backups."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from service.domain.records import Task
from service.domain.transitions import Decision
from service.storage import Event, Storage, backup_database, open_storage
from tests.contract.conftest import KEY, NOW, Reopen, key_hash, make_task


async def write_load(storage: Storage, tasks: int) -> None:
    """Concurrent inserts, then concurrent applies with events, all awaited (acknowledged)."""
    await asyncio.gather(*(storage.insert_task(make_task(n)) for n in range(tasks)))

    def running(n: int) -> Callable[[Task], Decision]:
        return lambda _task: Decision("applied", {"status": "running", "progress": n % 100})

    await asyncio.gather(
        *(
            storage.apply(f"task_{n}", running(n), Event(f"task_{n}", "callback", NOW, b"%d" % n))
            for n in range(tasks)
        )
    )


async def everything_is_there(storage: Storage, tasks: int) -> None:
    """Every acknowledged write of `write_load` is visible through `storage`."""
    for n in range(tasks):
        task = await storage.task(f"task_{n}")
        assert task is not None
        assert (task.status, task.progress) == ("running", n % 100)
        assert [e.body for e in await storage.events(f"task_{n}")] == [b"%d" % n]


async def test_acknowledged_writes_outlive_an_instance_that_never_shut_down(
    storage: Storage, reopen: Reopen
) -> None:
    """A fresh instance sees every acknowledged write while the writer is left as a crash
    would leave it: never closed, nothing flushed on the way out."""
    await write_load(storage, 120)
    await everything_is_there(await reopen(), 120)


async def test_acknowledged_writes_survive_close_and_reopen(url: str) -> None:
    """Closed and opened again, the database holds every acknowledged write."""
    first = open_storage(url)
    await first.open()
    await first.create_api_key(KEY, key_hash(KEY))
    await write_load(first, 60)
    await first.close()
    second = open_storage(url)
    await second.open()
    try:
        await everything_is_there(second, 60)
        assert [k.id for k in await second.list_api_keys()] == [KEY.id]
    finally:
        await second.close()


async def test_a_backup_is_a_verified_copy_of_the_live_database(
    storage: Storage, url: str, tmp_path: Path
) -> None:
    """`backup_database` copies the live database (while it stays open) and says what it made."""
    await write_load(storage, 30)
    made = await asyncio.to_thread(backup_database, url, tmp_path / "backup" / "copy")
    assert made.path == tmp_path / "backup" / "copy"
    assert made.bytes == made.path.stat().st_size > 0
    assert made.schema_version == await storage.schema_version()
    assert made.source
    await storage.ping()  # the live database is untouched and still answers
