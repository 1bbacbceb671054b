"""PostgreSQL operations on the `assets` table (the copy queue and the record of stored files)."""

from __future__ import annotations

import json
from typing import Any

from service.domain.outbox import final_event
from service.domain.records import Asset
from service.domain.results import with_copy
from service.domain.retention import pruned
from service.storage.columns import encode_column
from service.storage.postgres.core import Conn, PgBase, notify_task
from service.storage.postgres.deliveries import queue_event

_COLUMNS = (
    "task_id", "n", "upstream_url", "status", "attempts", "next_attempt_at", "error", "sha256",
    "content_type", "bytes", "width", "height", "stored_at",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM assets"
_SETS = ", ".join(f"{c} = ${i}" for i, c in enumerate(_COLUMNS[2:], 1))
_UPDATE = f"UPDATE assets SET {_SETS} WHERE task_id = ${len(_COLUMNS) - 1} AND n = ${len(_COLUMNS)}"
# what `assets prune` retires: stored copies of tasks completed before a cutoff
_OLD_TASKS = "SELECT id FROM tasks WHERE completed_at IS NOT NULL AND completed_at < $1"
_STORED = "SELECT 1 FROM assets WHERE sha256 = $1 AND status = 'stored' LIMIT 1"


def _asset(row: Any) -> Asset:
    return Asset(*row)


async def _save(conn: Conn, asset: Asset, now: float) -> None:
    """Write the asset row and copy its state into the task's `results[n]`.

    The task's row is locked first (as `apply` does), so two replicas saving two copies of one
    task rewrite its `results` in turn, never from the same stale read.
    """
    sql = "SELECT results, api_key_id, status, callback_url FROM tasks WHERE id = $1 FOR UPDATE"
    row = await conn.fetchrow(sql, asset.task_id)
    values = [getattr(asset, c) for c in _COLUMNS[2:]]
    await conn.execute(_UPDATE, *values, asset.task_id, asset.n)
    if row is None:
        return
    results = with_copy(json.loads(row[0]), asset)
    if results is not None:
        await conn.execute(
            "UPDATE tasks SET results = $1 WHERE id = $2",
            encode_column("results", results),
            asset.task_id,
        )
        await notify_task(conn, asset.task_id)  # live status: other replicas' watchers
    if not asset.settled:
        return
    # maybe the last copy: the client may be told now
    pending = "SELECT 1 FROM assets WHERE task_id = $1 AND status = 'pending' LIMIT 1"
    copies_pending = await conn.fetchval(pending, asset.task_id) is not None
    event = final_event(asset.task_id, row[1], row[2], row[3], now, copies_pending=copies_pending)
    if event is not None:
        await queue_event(conn, event)


class PgAssets(PgBase):
    """Mixed into `PostgresStorage`."""

    async def claim_assets(self, now: float, limit: int, lease_until: float) -> list[Asset]:
        """Lease up to `limit` due copy jobs; jobs another replica is claiming are skipped."""
        sql = (
            f"WITH due AS ({_SELECT} WHERE next_attempt_at <= $1 ORDER BY next_attempt_at"
            " LIMIT $2 FOR UPDATE SKIP LOCKED),"
            " leased AS (UPDATE assets SET next_attempt_at = $3 FROM due"
            " WHERE assets.task_id = due.task_id AND assets.n = due.n)"
            " SELECT * FROM due ORDER BY next_attempt_at"
        )

        async def op(conn: Conn) -> list[Asset]:
            jobs = [_asset(row) for row in await conn.fetch(sql, now, limit, lease_until)]
            for job in jobs:
                job.next_attempt_at = lease_until
            return jobs

        return await self._tx(op)

    async def save_asset(self, asset: Asset, now: float) -> None:
        """Store a job's new state (and its task's results entry) in one transaction."""

        async def op(conn: Conn) -> None:
            await _save(conn, asset, now)

        await self._tx(op)
        if self._on_task_change is not None:  # live status: its results entry changed
            self._on_task_change(asset.task_id)

    async def asset(self, task_id: str, n: int) -> Asset | None:
        """One asset row."""
        row = await self._fetchrow(f"{_SELECT} WHERE task_id = $1 AND n = $2", task_id, n)
        return _asset(row) if row is not None else None

    async def assets_of(self, task_id: str) -> list[Asset]:
        """Every asset row of a task, in result order."""
        rows = await self._fetch(f"{_SELECT} WHERE task_id = $1 ORDER BY n", task_id)
        return [_asset(row) for row in rows]

    async def hash_in_use(self, sha256: str) -> bool:
        """True while some stored copy refers to this file."""
        return bool(await self._fetch(_STORED, sha256))

    async def prune_assets(
        self, completed_before: float, limit: int, now: float = 0.0
    ) -> tuple[int, list[str]]:
        """Mark stored copies of tasks completed before the cutoff as pruned.

        Returns (copies pruned, sha256 of files no remaining stored copy refers to).
        """
        sql = (
            f"{_SELECT} WHERE status = 'stored' AND task_id IN ({_OLD_TASKS})"
            " ORDER BY task_id, n LIMIT $2"
        )

        async def op(conn: Conn) -> tuple[int, list[str]]:
            old = [pruned(_asset(row)) for row in await conn.fetch(sql, completed_before, limit)]
            for asset in old:
                await _save(conn, asset, now)
            orphans = []
            for sha in sorted({a.sha256 for a in old if a.sha256}):
                if await conn.fetchval(_STORED, sha) is None:
                    orphans.append(sha)
            return len(old), orphans

        return await self._tx(op)

    async def prune_count(self, completed_before: float) -> int:
        """How many stored copies `prune_assets` would retire now."""
        sql = f"SELECT count(*) FROM assets WHERE status = 'stored' AND task_id IN ({_OLD_TASKS})"
        return int(await self._fetchval(sql, completed_before) or 0)

    async def hash_in_use_after_prune(self, sha256: str, completed_before: float) -> bool:
        """True if a stored copy that `prune_assets` would keep refers to this file."""
        sql = (
            "SELECT 1 FROM assets WHERE sha256 = $2 AND status = 'stored'"
            f" AND task_id NOT IN ({_OLD_TASKS}) LIMIT 1"
        )
        return bool(await self._fetch(sql, completed_before, sha256))
