"""The PostgreSQL side of the benchmark (`--database URL`).

The URL names a server (and a database to connect to for administration); the benchmark makes
its own databases there, named `grsai_bench_<pid>_...`, and drops every one of them at the end.
A base database is migrated by the relay's own `grsai-relay db migrate` and given the API key
of the SQLite base (the same rows, so one key works on both); one seeded database per task
count is made from it and filled through PostgreSQL (binary COPY of the rows `seed.task_rows`
gives SQLite, then VACUUM ANALYZE); each relay run gets a fresh copy of a seeded database
(`CREATE DATABASE ... TEMPLATE`), dropped after the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from benchlib.plan import PlanTask
from benchlib.seed import task_rows
from service.storage.columns import TASK_COLUMNS

T = TypeVar("T")
KEY_TABLES = {  # what the SQLite base's API key is made of, column by column
    "api_keys": ("id", "name", "prefix", "key_hash", "created_at", "revoked_at", "demo"),
    "signing_secrets": ("api_key_id", "secret", "created_at", "expires_at"),
}


def _with_path(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


async def _on(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    conn = await asyncpg.connect(url, timeout=30)
    try:
        return await work(conn)
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class PgDb:
    """One database of the run, on the server of `--database`."""

    server: PgServer
    name: str

    @property
    def url(self) -> str:
        """The relay's DATABASE_URL."""
        return _with_path(self.server.url, self.name)

    @property
    def asset_dir(self) -> Path:
        """Result files of the relay on it, in the work directory."""
        return self.server.workdir / f"assets-{self.name}"

    def run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """`work(connection)` on a connection of its own."""
        return asyncio.run(_on(self.url, work))

    def outcomes(self) -> dict[str, int]:
        """Stored callbacks by outcome."""
        sql = "SELECT outcome, count(*) FROM events GROUP BY outcome"
        rows = self.run(lambda conn: conn.fetch(sql))
        return {str(outcome): int(n) for outcome, n in rows}

    def count_rows(self, table: str) -> int:
        """Rows in `table`."""
        sql = f"SELECT count(*) FROM {table}"  # noqa: S608  # fixed table names only
        return int(self.run(lambda conn: conn.fetchval(sql)))

    def size(self) -> int:
        """`pg_database_size`: tables, indexes and their free space."""
        return int(self.run(lambda conn: conn.fetchval("SELECT pg_database_size($1)", self.name)))

    def reschedule(self, tasks: list[PlanTask], now: float, silence: float) -> None:
        """As `seed.reschedule` does for SQLite: due times spread over the coming window."""
        ids, last, due = [], [], []
        for k, task in enumerate(tasks):
            at = now + silence * ((k * 0.6180339887498949) % 1.0)
            ids.append(task.id)
            last.append(at - silence)
            due.append(at)
        sql = (
            "UPDATE tasks SET last_event_at = v.last, next_poll_at = v.due, poll_attempts = 0"
            " FROM unnest($1::text[], $2::float8[], $3::float8[]) AS v(id, last, due)"
            " WHERE tasks.id = v.id AND tasks.status = 'running'"
        )
        self.run(lambda conn: conn.execute(sql, ids, last, due))

    def copy_key(self, sqlite_file: Path) -> str:
        """Copy the API key rows of a migrated SQLite file here; return the key's id."""
        with contextlib.closing(sqlite3.connect(sqlite_file)) as db:
            rows = {
                table: db.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()  # noqa: S608
                for table, cols in KEY_TABLES.items()
            }

        async def insert(conn: Any) -> None:
            for table, cols in KEY_TABLES.items():
                await conn.copy_records_to_table(table, records=rows[table], columns=cols)

        self.run(insert)
        return str(rows["api_keys"][0][0])

    def seed(self, count: int, key_id: str) -> float:
        """Insert `count` running callback-mode tasks (as SQLite gets them); return seconds."""
        started = time.perf_counter()
        rows = task_rows(count, key_id, time.time())

        async def fill(conn: Any) -> None:
            await conn.copy_records_to_table("tasks", records=rows, columns=TASK_COLUMNS)
            await conn.execute("VACUUM ANALYZE tasks")

        self.run(fill)
        return time.perf_counter() - started


class PgServer:
    """The server of `--database`: makes, copies and drops the run's databases."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.prefix = f"grsai_bench_{os.getpid()}"
        self.made: list[str] = []

    def _admin(self, sql: str) -> Any:
        return asyncio.run(_on(self.url, lambda conn: conn.fetchval(sql)))

    def version(self) -> str:
        """The server's version; a clear RuntimeError if it cannot be reached."""
        try:
            return str(self._admin("SHOW server_version"))
        except (OSError, asyncpg.PostgresError) as exc:
            raise RuntimeError(f"cannot reach PostgreSQL at {self.url}: {exc}") from exc

    def create(self, name: str, template: PgDb | None = None) -> PgDb:
        """A new database (a file-level copy of `template`, if given)."""
        full = f"{self.prefix}_{name}"
        # FILE_COPY: a copy of the files after a checkpoint, instead of writing all of it to WAL
        like = f' TEMPLATE "{template.name}" STRATEGY FILE_COPY' if template else ""
        self._admin(f'CREATE DATABASE "{full}"{like}')
        self.made.append(full)
        return PgDb(self, full)

    def drop(self, db: PgDb) -> None:
        """Drop one of the run's databases (closing what is still connected)."""
        self._admin(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
        if db.name in self.made:
            self.made.remove(db.name)

    def drop_all(self) -> None:
        """Drop every database this run made and still has."""
        for name in list(self.made):
            self.drop(PgDb(self, name))

    @contextlib.contextmanager
    def copy(self, template: PgDb, name: str) -> Iterator[PgDb]:
        """A fresh copy of `template` for the block, dropped afterwards."""
        db = self.create(name, template)
        try:
            yield db
        finally:
            self.drop(db)
