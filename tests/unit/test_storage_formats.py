"""Migrating a database made before GrsAI-shaped callbacks: its tasks become relay-shaped, its
deliveries are kept with their attempts' ids, a task may now have several events of one type
(progress events), and an unknown callback format is refused."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from service.domain.outbox import OutboxEvent
from service.domain.records import Task
from service.domain.transitions import Decision
from service.storage import Storage, open_storage
from service.storage.postgres import migrations as pg_migrations
from service.storage.sqlite import migrations as sqlite_migrations
from tests import pgserver
from tests.contract.conftest import KEY
from tests.old_schemas import old_postgres, old_sqlite

SQLITE_BEFORE = 5  # the last SQLite schema without callback formats
PG_BEFORE = 3  # the same for PostgreSQL
_TASK = (
    "INSERT INTO tasks (id, api_key_id, model, endpoint, mode, status, input, created_at,"
    " updated_at, submit_state, upstream_id, callback_url) VALUES"
    " ('task_old', 'key_main', 'nano-banana', '/v1/draw/nano-banana', 'poll', 'failed',"
    " '{}', 1, 1, 'submitted', 'up-old', 'https://client.test/hook')"
)
_DELIVERY = (
    "INSERT INTO deliveries (id, task_id, api_key_id, event_type, url, status, attempts,"
    " event_at, delivered_at) VALUES ('msg_old', 'task_old', 'key_main', 'task.failed',"
    " 'https://client.test/hook', 'delivered', 1, 2, 3)"
)


def queueing(event: OutboxEvent) -> Callable[[Task], Decision]:
    """A decide that only queues `event`."""

    def decide(_task: Task) -> Decision:
        return Decision("applied", progress_event=event)

    return decide


async def _check_upgraded(storage: Storage) -> None:
    """The old task is relay-shaped, its delivery is kept, and progress events now fit."""
    old = await storage.task("task_old")
    assert old is not None
    assert (old.status, old.callback_format) == ("failed", "relay")
    ((delivery, _),) = await storage.deliveries_of("task_old")
    assert (delivery.id, delivery.status, delivery.progress) == ("msg_old", "delivered", None)
    for progress in (10, 20):
        event = OutboxEvent("task_old", KEY.id, "task.progress", "https://c.test/h", 5, progress)
        await storage.apply("task_old", queueing(event), None)
    found = [d.progress for d, _ in await storage.deliveries_of("task_old")]
    assert found == [None, 10, 20]


async def test_sqlite_upgrade_keeps_deliveries_and_makes_tasks_relay_shaped(
    tmp_path: Path,
) -> None:
    """An old SQLite file keeps its task and delivery and refuses an unknown callback format."""
    path = tmp_path / "old.db"
    old_sqlite(path, SQLITE_BEFORE, _TASK, _DELIVERY)
    storage = open_storage(f"sqlite:///{path}")
    await storage.open()
    try:
        assert await storage.schema_version() == sqlite_migrations.LATEST
        await _check_upgraded(storage)
    finally:
        await storage.close()
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("UPDATE tasks SET callback_format = 'xml' WHERE id = 'task_old'")


@pytest.fixture(name="pg_url")
def _pg_url() -> Iterator[str]:
    with pgserver.fresh_database() as url:
        yield url


async def test_postgresql_upgrade_keeps_deliveries_and_makes_tasks_relay_shaped(
    pg_url: str,
) -> None:
    """An old PostgreSQL schema keeps its task and delivery and refuses an unknown format."""
    await old_postgres(pg_url, PG_BEFORE, _TASK, _DELIVERY)
    storage = open_storage(pg_url)
    await storage.open()
    try:
        assert await storage.schema_version() == pg_migrations.LATEST
        await _check_upgraded(storage)
    finally:
        await storage.close()
    conn = await asyncpg.connect(pg_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE tasks SET callback_format = 'xml' WHERE id = 'task_old'")
    finally:
        await asyncio.shield(conn.close())
