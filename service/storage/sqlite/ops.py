"""SQLite operations for operators: list tasks across keys, purge old tasks, back up the file."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.domain.records import Task
from service.domain.retention import BUSY_COPY, BUSY_DELIVERY, PURGEABLE_STATUSES
from service.storage.base import Backup, BackupError
from service.storage.sqlite.core import SQLiteBase
from service.storage.sqlite.rows import SELECT_TASK, row_task
from service.storage.sqlite.writer import storage_error

# What `domain.retention` allows to be purged: a final task completed before the cutoff, once
# nothing still works on it. The words are the domain's constants, never input.
_STATUSES = ", ".join(f"'{status}'" for status in sorted(PURGEABLE_STATUSES))
_OLD = (
    f"tasks.status IN ({_STATUSES}) AND tasks.completed_at IS NOT NULL AND tasks.completed_at < ?"
)
_IDLE = (
    "NOT EXISTS (SELECT 1 FROM assets a WHERE a.task_id = tasks.id"
    f" AND a.status = '{BUSY_COPY}')"
    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.task_id = tasks.id"
    f" AND d.status = '{BUSY_DELIVERY}')"
)
_PURGEABLE = f"SELECT id FROM tasks WHERE {_OLD} AND {_IDLE}"
# a file stays in use through a stored copy whose task the purge keeps (or whose task is gone)
_KEPT_COPY = (
    "SELECT 1 FROM assets LEFT JOIN tasks ON tasks.id = assets.task_id"
    " WHERE assets.sha256 = ? AND assets.status = 'stored'"
    f" AND (tasks.id IS NULL OR NOT ({_OLD} AND {_IDLE})) LIMIT 1"
)
_IN_IDS = "IN (SELECT value FROM json_each(?))"  # a JSON array: no bound-parameter limit
PURGE_KEYS = ("tasks", "events", "assets", "deliveries", "delivery_attempts")
STEP_PAGES = 1024  # pages copied per backup step (4 MiB at the default page size)
STEP_PAUSE = 0.005  # seconds between backup steps, leaving the disk to the serving relay


def _rows_about(ids: str) -> dict[str, str]:
    """`<table> WHERE ...`: every row about the tasks `ids` selects, children first."""
    return {
        "events": f"events WHERE task_id {ids}",
        "assets": f"assets WHERE task_id {ids}",
        "delivery_attempts": "delivery_attempts WHERE delivery_id IN"
        f" (SELECT id FROM deliveries WHERE task_id {ids})",
        "deliveries": f"deliveries WHERE task_id {ids}",
        "tasks": f"tasks WHERE id {ids}",
    }


_TO_POLLING = (
    "UPDATE tasks SET mode = 'poll', next_poll_at = ?"
    " WHERE mode = 'callback' AND status IN ('pending', 'running') AND next_poll_at > ?"
)


class SQLiteOps(SQLiteBase):
    """Mixed into `SQLiteStorage`."""

    async def _ops_read(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        try:
            async with self._read_conn().execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    async def list_all_tasks(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        api_key_id: str | None = None,
        limit: int = 50,
    ) -> list[Task]:
        """Tasks of every key (or one), newest first."""
        where, params = ["1"], []
        for column, value in (("status", status), ("model", model), ("api_key_id", api_key_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"{SELECT_TASK} WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        return [row_task(row) for row in await self._ops_read(sql, (*params, limit))]

    async def switch_to_polling(self, now: float) -> int:
        """Open callback-mode tasks go to poll mode, due now (one write)."""

        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(_TO_POLLING, (now, now)).rowcount

        switched: int = await self._write(op)
        return switched

    async def purge_counts(self, completed_before: float) -> dict[str, int]:
        """What `purge_tasks` would delete now, per table, and `held`: old tasks still busy."""
        counts: dict[str, int] = {}
        for table, rows_about in _rows_about(f"IN ({_PURGEABLE})").items():
            rows = await self._ops_read(f"SELECT count(*) FROM {rows_about}", (completed_before,))
            counts[table] = int(rows[0][0])
        rows = await self._ops_read(f"SELECT count(*) FROM tasks WHERE {_OLD}", (completed_before,))
        counts["held"] = int(rows[0][0]) - counts["tasks"]
        return counts

    async def purge_tasks(self, completed_before: float, batch: int) -> dict[str, int]:
        """Delete idle terminal tasks completed before the cutoff, with every row about them.

        Works `batch` tasks per transaction so a serving relay's writes wait only briefly.
        Returns the rows deleted per table (`PURGE_KEYS`).
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        totals = dict.fromkeys(PURGE_KEYS, 0)
        while True:
            counts: dict[str, int] = await self._write(
                _purge_batch(completed_before, batch), heavy=True
            )
            for table, count in counts.items():
                totals[table] += count
            if counts["tasks"] < batch:
                return totals

    async def hash_in_use_after_purge(self, sha256: str, completed_before: float) -> bool:
        """True if a stored copy outside what `purge_tasks` would delete refers to this file."""
        return bool(await self._ops_read(_KEPT_COPY, (sha256, completed_before)))


def _purge_batch(completed_before: float, batch: int) -> Callable[[sqlite3.Connection], Any]:
    def op(conn: sqlite3.Connection) -> dict[str, int]:
        sql = f"{_PURGEABLE} ORDER BY completed_at LIMIT ?"
        cur = conn.execute(sql, (completed_before, batch))
        ids = json.dumps([row[0] for row in cur.fetchall()])
        counts: dict[str, int] = {}
        for table, rows_about in _rows_about(_IN_IDS).items():  # attempts go before deliveries
            cur = conn.execute(f"DELETE FROM {rows_about}", (ids,))
            counts[table] = cur.rowcount
        return counts

    return op


def _nap() -> None:
    time.sleep(STEP_PAUSE)


def backup_database(
    source: str | Path,
    dest: str | Path,
    *,
    step_pages: int | None = None,
    pause: Callable[[], None] | None = None,
) -> Backup:
    """Copy a live SQLite database to `dest` with the online backup API, consistently.

    The copy is made into a private temporary file next to `dest`, checked with
    `PRAGMA integrity_check`, and only then renamed over `dest`, so `dest` is always either
    the previous file or a complete, verified copy. Copies `step_pages` (default `STEP_PAGES`)
    at a time and calls `pause` (default: sleep `STEP_PAUSE`) between steps. Blocking.
    """
    src, final = Path(source), Path(dest)
    if not src.is_file():
        raise BackupError(f"no database file at {src}")
    if final.is_dir():
        raise BackupError(f"{final} is a directory; give the backup's file name")
    if final.exists() and final.samefile(src):
        raise BackupError("the backup path is the live database itself")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)  # mode 0600: the copy holds key hashes and signing secrets
    tmp = Path(name)
    try:
        _copy(src, tmp, step_pages or STEP_PAGES, pause or _nap)
        version = _verify(tmp)
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(final.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"could not copy the database: {exc}") from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    return Backup(final, final.stat().st_size, version, str(src))


def _copy(source: Path, target: Path, step_pages: int, pause: Callable[[], None]) -> None:
    src = sqlite3.connect(source, isolation_level=None)
    try:
        src.execute("PRAGMA busy_timeout = 5000")
        # One read transaction around every step pins a single snapshot: writers carry on (WAL
        # readers never block them), and their commits cannot restart the copy, which
        # otherwise starts over after each of them and never finishes under steady writes.
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            src.backup(dst, pages=step_pages, progress=lambda *_: pause())
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal
        finally:
            dst.close()
        src.execute("COMMIT")
    finally:
        src.close()


def _verify(path: Path) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
        if problems != ["ok"]:
            raise BackupError("the copy failed its integrity check: " + "; ".join(problems[:5]))
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
