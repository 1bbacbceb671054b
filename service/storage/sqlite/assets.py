"""SQLite operations on the `assets` table (the copy queue and the record of stored files)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from service.domain.outbox import final_event
from service.domain.records import Asset
from service.domain.results import with_copy
from service.domain.retention import pruned
from service.storage.sqlite.core import SQLiteBase
from service.storage.sqlite.deliveries import queue_event
from service.storage.sqlite.rows import encode_column

_COLUMNS = (
    "task_id", "n", "upstream_url", "status", "attempts", "next_attempt_at", "error", "sha256",
    "content_type", "bytes", "width", "height", "stored_at",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM assets"
# what `assets prune` retires: stored copies of tasks completed before a cutoff
_OLD_TASKS = "SELECT id FROM tasks WHERE completed_at IS NOT NULL AND completed_at < ?"


def _asset(row: Any) -> Asset:
    return Asset(*row)


def _save(conn: sqlite3.Connection, asset: Asset, now: float) -> None:
    """Write the asset row and copy its state into the task's `results[n]`."""
    values = [getattr(asset, c) for c in _COLUMNS[2:]]
    assignments = ", ".join(f"{c} = ?" for c in _COLUMNS[2:])
    conn.execute(
        f"UPDATE assets SET {assignments} WHERE task_id = ? AND n = ?",
        (*values, asset.task_id, asset.n),
    )
    sql = "SELECT results, api_key_id, status, callback_url FROM tasks WHERE id = ?"
    row = conn.execute(sql, (asset.task_id,)).fetchone()
    if row is None:
        return
    results = with_copy(json.loads(row[0]), asset)
    if results is not None:
        conn.execute(
            "UPDATE tasks SET results = ? WHERE id = ?",
            (encode_column("results", results), asset.task_id),
        )
    if not asset.settled:
        return
    # maybe the last copy: the client may be told now
    pending = "SELECT 1 FROM assets WHERE task_id = ? AND status = 'pending' LIMIT 1"
    copies_pending = conn.execute(pending, (asset.task_id,)).fetchone() is not None
    event = final_event(asset.task_id, row[1], row[2], row[3], now, copies_pending=copies_pending)
    if event is not None:
        queue_event(conn, event)


class SQLiteAssets(SQLiteBase):
    """Mixed into `SQLiteStorage`."""

    async def claim_assets(self, now: float, limit: int, lease_until: float) -> list[Asset]:
        """Take up to `limit` due copy jobs, leasing them until `lease_until`."""

        def op(conn: sqlite3.Connection) -> list[Asset]:
            sql = f"{_SELECT} WHERE next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?"
            cur = conn.execute(sql, (now, limit))
            jobs = [_asset(row) for row in cur.fetchall()]
            conn.executemany(
                "UPDATE assets SET next_attempt_at = ? WHERE task_id = ? AND n = ?",
                [(lease_until, a.task_id, a.n) for a in jobs],
            )
            for job in jobs:
                job.next_attempt_at = lease_until
            return jobs

        result: list[Asset] = await self._write(op)
        return result

    async def save_asset(self, asset: Asset, now: float) -> None:
        """Store a job's new state (and its task's results entry) in one transaction."""

        def op(conn: sqlite3.Connection) -> None:
            _save(conn, asset, now)

        await self._write(op)
        if self._on_task_change is not None:  # live status: its results entry changed
            self._on_task_change(asset.task_id)

    async def asset(self, task_id: str, n: int) -> Asset | None:
        """One asset row."""
        rows = self._fast_rows(f"{_SELECT} WHERE task_id = ? AND n = ?", (task_id, n))
        return _asset(rows[0]) if rows else None

    async def assets_of(self, task_id: str) -> list[Asset]:
        """Every asset row of a task, in result order."""
        sql = f"{_SELECT} WHERE task_id = ? ORDER BY n"
        async with self._read_conn().execute(sql, (task_id,)) as cur:
            return [_asset(row) for row in await cur.fetchall()]

    async def hash_in_use(self, sha256: str) -> bool:
        """True while some stored copy refers to this file."""
        sql = "SELECT 1 FROM assets WHERE sha256 = ? AND status = 'stored' LIMIT 1"
        async with self._read_conn().execute(sql, (sha256,)) as cur:
            return await cur.fetchone() is not None

    async def prune_assets(
        self, completed_before: float, limit: int, now: float = 0.0
    ) -> tuple[int, list[str]]:
        """Mark stored copies of tasks completed before the cutoff as pruned.

        Returns (copies pruned, sha256 of files no remaining stored copy refers to).
        """

        def op(conn: sqlite3.Connection) -> tuple[int, list[str]]:
            sql = f"{_SELECT} WHERE status = 'stored' AND task_id IN ({_OLD_TASKS}) LIMIT ?"
            cur = conn.execute(sql, (completed_before, limit))
            old = [pruned(_asset(row)) for row in cur.fetchall()]
            for asset in old:
                _save(conn, asset, now)
            orphans = []
            for sha in sorted({a.sha256 for a in old if a.sha256}):
                check = "SELECT 1 FROM assets WHERE sha256 = ? AND status = 'stored' LIMIT 1"
                cur = conn.execute(check, (sha,))
                if cur.fetchone() is None:
                    orphans.append(sha)
            return len(old), orphans

        result: tuple[int, list[str]] = await self._write(op)
        return result

    async def prune_count(self, completed_before: float) -> int:
        """How many stored copies `prune_assets` would retire now."""
        sql = f"SELECT count(*) FROM assets WHERE status = 'stored' AND task_id IN ({_OLD_TASKS})"
        async with self._read_conn().execute(sql, (completed_before,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def hash_in_use_after_prune(self, sha256: str, completed_before: float) -> bool:
        """True if a stored copy that `prune_assets` would keep refers to this file."""
        sql = (
            "SELECT 1 FROM assets WHERE sha256 = ? AND status = 'stored'"
            f" AND task_id NOT IN ({_OLD_TASKS}) LIMIT 1"
        )
        async with self._read_conn().execute(sql, (sha256, completed_before)) as cur:
            return await cur.fetchone() is not None
