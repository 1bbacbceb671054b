"""SQLite operations for client callbacks: signing secrets and the delivery outbox."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from service.domain.outbox import FINAL_EVENTS, GONE, OutboxEvent, candidates, fair_share
from service.domain.records import Attempt, Delivery
from service.storage.sqlite.core import SQLiteBase

_COLUMNS = (
    "id", "task_id", "api_key_id", "event_type", "url", "status", "attempts", "next_attempt_at",
    "event_at", "delivered_at", "dead_at", "last_error", "progress",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM deliveries"
# oldest first; progress events of one moment in their order, before the final event
_ORDER = "ORDER BY event_at, progress IS NULL, progress"
_EVENT_TYPES = ", ".join(f"'{event}'" for event in FINAL_EVENTS.values())  # fixed words


def _gone(conn: sqlite3.Connection, url: str) -> bool:
    return conn.execute("SELECT 1 FROM gone_urls WHERE url = ?", (url,)).fetchone() is not None


def queue_event(conn: sqlite3.Connection, event: OutboxEvent) -> None:
    """Store the outbox row of an event (`event.row`), once: a second one is ignored.

    Called inside the transaction whose change made it due, so the event and its cause commit
    together (transactional outbox).
    """
    row = event.row(gone=_gone(conn, event.url))
    conn.execute(
        "INSERT OR IGNORE INTO deliveries (id, task_id, api_key_id, event_type, url, status,"
        " next_attempt_at, event_at, dead_at, last_error, progress)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (row.id, row.task_id, row.api_key_id, row.event_type, row.url, row.status,
         row.next_attempt_at, row.event_at, row.dead_at, row.last_error, row.progress),
    )  # fmt: skip


class SQLiteDeliveries(SQLiteBase):
    """Mixed into `SQLiteStorage`."""

    async def add_signing_secret(
        self, api_key_id: str, secret: str, now: float, retire_others_at: float | None
    ) -> None:
        """Add a current secret; older current ones stop signing at `retire_others_at`."""

        def op(conn: sqlite3.Connection) -> None:
            if retire_others_at is not None:
                conn.execute(
                    "UPDATE signing_secrets SET expires_at = ?"
                    " WHERE api_key_id = ? AND (expires_at IS NULL OR expires_at > ?)",
                    (retire_others_at, api_key_id, retire_others_at),
                )
            conn.execute(
                "INSERT INTO signing_secrets (api_key_id, secret, created_at) VALUES (?,?,?)",
                (api_key_id, secret, now),
            )

        await self._write(op)

    async def signing_secrets(self, api_key_id: str, now: float) -> list[str]:
        """The secrets that sign right now, newest first."""
        sql = (
            "SELECT secret FROM signing_secrets WHERE api_key_id = ?"
            " AND (expires_at IS NULL OR expires_at > ?) ORDER BY id DESC"
        )
        return [row[0] for row in self._fast_rows(sql, (api_key_id, now))]

    async def claim_deliveries(
        self, now: float, lease_until: float, free: int, busy: Mapping[str, int], per_host: int
    ) -> list[Delivery]:
        """Lease due deliveries, at most `free` in all and `per_host` per destination host."""

        def op(conn: sqlite3.Connection) -> list[Delivery]:
            sql = f"{_SELECT} WHERE next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?"
            cur = conn.execute(sql, (now, candidates(free)))
            taken = fair_share((Delivery(*row) for row in cur.fetchall()), free, busy, per_host)
            for delivery in taken:
                delivery.next_attempt_at = lease_until
            conn.executemany(
                "UPDATE deliveries SET next_attempt_at = ? WHERE id = ?",
                [(lease_until, d.id) for d in taken],
            )
            return taken

        result: list[Delivery] = await self._write(op)
        return result

    async def record_attempt(self, delivery: Delivery, attempt: Attempt, gone: bool) -> None:
        """Store an attempt and the delivery's new state; a 410 retires its URL for good."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO delivery_attempts (delivery_id, attempted_at, status_code,"
                " latency_ms, error) VALUES (?,?,?,?,?)",
                (delivery.id, attempt.attempted_at, attempt.status_code, attempt.latency_ms,
                 attempt.error),
            )  # fmt: skip
            conn.execute(
                "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
                " delivered_at = ?, dead_at = ?, last_error = ? WHERE id = ?",
                (delivery.status, delivery.attempts, delivery.next_attempt_at,
                 delivery.delivered_at, delivery.dead_at, delivery.last_error, delivery.id),
            )  # fmt: skip
            if gone:
                conn.execute(
                    "INSERT OR REPLACE INTO gone_urls (url, at) VALUES (?, ?)",
                    (delivery.url, attempt.attempted_at),
                )
                conn.execute(
                    "UPDATE deliveries SET status = 'dead', next_attempt_at = NULL, dead_at = ?,"
                    " last_error = ? WHERE url = ? AND status = 'pending'",
                    (attempt.attempted_at, GONE, delivery.url),
                )

        await self._write(op)

    async def deliveries_of(self, task_id: str) -> list[tuple[Delivery, list[Attempt]]]:
        """A task's deliveries with every attempt, oldest first."""
        conn = self._read_conn()
        async with conn.execute(f"{_SELECT} WHERE task_id = ? {_ORDER}", (task_id,)) as c:
            deliveries = [Delivery(*row) for row in await c.fetchall()]
        found = []
        for delivery in deliveries:
            sql = (
                "SELECT delivery_id, attempted_at, status_code, latency_ms, error"
                " FROM delivery_attempts WHERE delivery_id = ? ORDER BY id"
            )
            async with conn.execute(sql, (delivery.id,)) as cur:
                found.append((delivery, [Attempt(*row) for row in await cur.fetchall()]))
        return found

    async def redeliver(self, task_id: str, now: float) -> Delivery | None:
        """Queue the task's final event again (same id); an explicit redelivery un-gones its URL."""

        def op(conn: sqlite3.Connection) -> Delivery | None:
            sql = f"{_SELECT} WHERE task_id = ? AND event_type IN ({_EVENT_TYPES})"
            cur = conn.execute(sql, (task_id,))
            row = cur.fetchone()
            if row is None:
                return None
            delivery = Delivery(*row)
            conn.execute("DELETE FROM gone_urls WHERE url = ?", (delivery.url,))
            conn.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, dead_at = NULL"
                " WHERE id = ?",
                (now, delivery.id),
            )
            delivery.status, delivery.next_attempt_at, delivery.dead_at = "pending", now, None
            return delivery

        result: Delivery | None = await self._write(op)
        return result

    async def replay_dead(self, api_key_id: str, since: float, now: float) -> int:
        """Re-queue the key's dead deliveries that died at or after `since`."""

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, dead_at = NULL"
                " WHERE api_key_id = ? AND status = 'dead' AND dead_at >= ?"
                " AND url NOT IN (SELECT url FROM gone_urls)",
                (now, api_key_id, since),
            )
            return int(cur.rowcount)

        result: int = await self._write(op, heavy=True)  # may touch many rows
        return result
