"""PostgreSQL operations for operators (tasks across keys, purging old tasks) and the queries
behind the scrape-time gauges."""

from __future__ import annotations

from typing import Any

from service.domain.records import Task
from service.domain.retention import BUSY_COPY, BUSY_DELIVERY, PURGEABLE_STATUSES
from service.storage.columns import SELECT_TASK, row_task
from service.storage.postgres.core import Conn, PgBase

# What `domain.retention` allows to be purged: a final task completed before the cutoff ($1),
# once nothing still works on it. The words are the domain's constants, never input.
_STATUSES = ", ".join(f"'{status}'" for status in sorted(PURGEABLE_STATUSES))
_OLD = (
    f"tasks.status IN ({_STATUSES}) AND tasks.completed_at IS NOT NULL AND tasks.completed_at < $1"
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
    " WHERE assets.sha256 = $2 AND assets.status = 'stored'"
    f" AND (tasks.id IS NULL OR NOT ({_OLD} AND {_IDLE})) LIMIT 1"
)
PURGE_KEYS = ("tasks", "events", "assets", "deliveries", "delivery_attempts")
_QUEUES = {
    "poller": "SELECT count(*), min(next_poll_at) FROM tasks WHERE next_poll_at <= $1",
    "copier": "SELECT count(*), min(next_attempt_at) FROM assets WHERE next_attempt_at <= $1",
    "deliverer": "SELECT count(*), min(next_attempt_at) FROM deliveries"
    " WHERE next_attempt_at <= $1",
}


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


class PgOps(PgBase):
    """Mixed into `PostgresStorage`."""

    async def list_all_tasks(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        api_key_id: str | None = None,
        limit: int = 50,
    ) -> list[Task]:
        """Tasks of every key (or one), newest first."""
        where, params = ["TRUE"], []
        for column, value in (("status", status), ("model", model), ("api_key_id", api_key_id)):
            if value is not None:
                params.append(value)
                where.append(f"{column} = ${len(params)}")
        sql = (
            f"{SELECT_TASK} WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ${len(params) + 1}"
        )
        return [row_task(row) for row in await self._fetch(sql, *params, limit)]

    async def switch_to_polling(self, now: float) -> int:
        """Open callback-mode tasks go to poll mode, due now (one statement)."""
        sql = (
            "UPDATE tasks SET mode = 'poll', next_poll_at = $1"
            " WHERE mode = 'callback' AND status IN ('pending', 'running') AND next_poll_at > $1"
        )

        async def op(conn: Conn) -> int:
            return int((await conn.execute(sql, now)).rsplit(" ", 1)[-1])

        return await self._tx(op)

    async def purge_counts(self, completed_before: float) -> dict[str, int]:
        """What `purge_tasks` would delete now, per table, and `held`: old tasks still busy."""
        counts: dict[str, int] = {}
        for table, rows_about in _rows_about(f"IN ({_PURGEABLE})").items():
            counts[table] = int(
                await self._fetchval(f"SELECT count(*) FROM {rows_about}", completed_before)
            )
        old = int(
            await self._fetchval(f"SELECT count(*) FROM tasks WHERE {_OLD}", completed_before)
        )
        counts["held"] = old - counts["tasks"]
        return counts

    async def purge_tasks(self, completed_before: float, batch: int) -> dict[str, int]:
        """Delete idle terminal tasks completed before the cutoff, with every row about them,
        `batch` tasks per transaction. Returns the rows deleted per table (`PURGE_KEYS`)."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        pick = f"{_PURGEABLE} ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED"

        async def one_batch(conn: Conn) -> dict[str, int]:
            ids = [row[0] for row in await conn.fetch(pick, completed_before, batch)]
            counts: dict[str, int] = {}
            for table, rows_about in _rows_about("= ANY($1::text[])").items():
                status = await conn.execute(f"DELETE FROM {rows_about}", ids)
                counts[table] = int(status.rsplit(" ", 1)[-1])
            return counts

        totals = dict.fromkeys(PURGE_KEYS, 0)
        while True:
            counts = await self._tx(one_batch)
            for table, count in counts.items():
                totals[table] += count
            if counts["tasks"] < batch:
                return totals

    async def hash_in_use_after_purge(self, sha256: str, completed_before: float) -> bool:
        """True if a stored copy outside what `purge_tasks` would delete refers to this file."""
        return bool(await self._fetch(_KEPT_COPY, completed_before, sha256))

    async def queue_stats(self, now: float) -> dict[str, tuple[int, float]]:
        """Per queue: jobs due now, and how long the oldest has been due."""
        found = {}
        for name, sql in _QUEUES.items():
            row: Any = await self._fetchrow(sql, now)
            count, oldest = (row[0], row[1]) if row else (0, None)
            found[name] = (int(count), max(0.0, now - oldest) if oldest is not None else 0.0)
        return found

    async def status_counts(self) -> dict[str, int]:
        """Tasks by status."""
        rows = await self._fetch("SELECT status, count(*) FROM tasks GROUP BY status")
        return {str(status): int(count) for status, count in rows}
