"""SQLite queries behind the scrape-time gauges (queue depth and age, tasks by status)."""

from __future__ import annotations

from service.storage.sqlite.core import SQLiteBase

_QUEUES = {
    "poller": "SELECT count(*), min(next_poll_at) FROM tasks WHERE next_poll_at <= ?",
    "copier": "SELECT count(*), min(next_attempt_at) FROM assets WHERE next_attempt_at <= ?",
    "deliverer": "SELECT count(*), min(next_attempt_at) FROM deliveries WHERE next_attempt_at <= ?",
}


class SQLiteStats(SQLiteBase):
    """Mixed into `SQLiteStorage`."""

    async def queue_stats(self, now: float) -> dict[str, tuple[int, float]]:
        """Per queue: jobs due now, and how long the oldest has been due (indexed range scans)."""
        found = {}
        for name, sql in _QUEUES.items():
            async with self._read_conn().execute(sql, (now,)) as cur:
                row = await cur.fetchone()
            count, oldest = (row[0], row[1]) if row else (0, None)
            found[name] = (int(count), max(0.0, now - oldest) if oldest is not None else 0.0)
        return found

    async def status_counts(self) -> dict[str, int]:
        """Tasks by status."""
        sql = "SELECT status, count(*) FROM tasks GROUP BY status"
        async with self._read_conn().execute(sql) as cur:
            return {str(status): int(count) for status, count in await cur.fetchall()}
