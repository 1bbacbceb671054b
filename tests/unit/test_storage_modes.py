"""Migrating a database made before stream mode: every row and index kept, 'stream' allowed,
anything else still refused (SQLite rebuilds the table, PostgreSQL swaps the constraint)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from service.storage import open_storage
from service.storage.postgres import migrations as pg_migrations
from service.storage.sqlite import migrations as sqlite_migrations
from tests import pgserver
from tests.contract.conftest import make_task
from tests.old_schemas import old_postgres, old_sqlite

SQLITE_BEFORE = 4  # the last SQLite schema without stream mode
PG_BEFORE = 2  # the same for PostgreSQL
_ROW = (
    "INSERT INTO tasks (id, api_key_id, model, endpoint, mode, status, input, created_at,"
    " updated_at, submit_state, next_poll_at) VALUES"
    " ('task_old', 'key_main', 'nano-banana', '/v1/draw/nano-banana', 'callback', 'running',"
    " '{}', 1, 1, 'submitted', 5)"
)


def _sqlite_indexes(path: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'"
        ).fetchall()
    return sorted(rows)


async def test_sqlite_upgrade_keeps_rows_indexes_and_sequence(tmp_path: Path) -> None:
    """An old SQLite file keeps its task, every index and its AUTOINCREMENT mark."""
    path = tmp_path / "old.db"
    purged = ("DELETE FROM tasks WHERE id = 'task_gone'",)  # a purged task: seq 2 used
    old_sqlite(path, SQLITE_BEFORE, _ROW, _ROW.replace("task_old", "task_gone"), *purged)
    indexes = _sqlite_indexes(path)
    storage = open_storage(f"sqlite:///{path}")
    await storage.open()
    try:
        assert await storage.schema_version() == sqlite_migrations.LATEST
        old = await storage.task("task_old")
        assert old is not None
        assert (old.mode, old.status, old.next_poll_at, old.seq) == ("callback", "running", 5, 1)
        await storage.insert_task(make_task(9, mode="stream"))
        new = await storage.task("task_9")
        assert new is not None
        assert (new.mode, new.seq) == ("stream", 3)  # the purged task's seq is not reused
    finally:
        await storage.close()
    assert _sqlite_indexes(path) == indexes
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute(_ROW.replace("task_old", "task_x").replace("'callback'", "'carrier'"))


@pytest.fixture(name="pg_url")
def _pg_url() -> Iterator[str]:
    with pgserver.fresh_database() as url:
        yield url


async def test_postgresql_upgrade_swaps_the_mode_constraint(pg_url: str) -> None:
    """An old PostgreSQL schema keeps its task, takes 'stream' and still refuses others."""
    await old_postgres(pg_url, PG_BEFORE, _ROW)
    storage = open_storage(pg_url)
    await storage.open()
    try:
        assert await storage.schema_version() == pg_migrations.LATEST
        old = await storage.task("task_old")
        assert old is not None
        assert (old.mode, old.status) == ("callback", "running")
        await storage.insert_task(make_task(9, mode="stream"))
        new = await storage.task("task_9")
        assert new is not None
        assert new.mode == "stream"
    finally:
        await storage.close()
    conn = await asyncpg.connect(pg_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(_ROW.replace("task_old", "task_x").replace("'callback'", "'x'"))
    finally:
        await asyncio.shield(conn.close())
