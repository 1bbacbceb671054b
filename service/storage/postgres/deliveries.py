"""PostgreSQL operations for client callbacks: signing secrets and the delivery outbox."""

from __future__ import annotations

from collections.abc import Mapping

from service.domain.outbox import FINAL_EVENTS, GONE, OutboxEvent, candidates, fair_share
from service.domain.records import Attempt, Delivery
from service.storage.postgres.core import Conn, PgBase, notify

_COLUMNS = (
    "id", "task_id", "api_key_id", "event_type", "url", "status", "attempts", "next_attempt_at",
    "event_at", "delivered_at", "dead_at", "last_error", "progress",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM deliveries"
# oldest first; progress events of one moment in their order, before the final event
_ORDER = "ORDER BY event_at, progress IS NULL, progress"
_EVENT_TYPES = ", ".join(f"'{event}'" for event in FINAL_EVENTS.values())  # fixed words


async def queue_event(conn: Conn, event: OutboxEvent) -> None:
    """Store the outbox row of an event (`event.row`), once: a second one is ignored.

    Called inside the transaction whose change made it due, so the event and its cause commit
    together (transactional outbox); every replica's deliverer hears of it at the commit.
    """
    gone = await conn.fetchval("SELECT 1 FROM gone_urls WHERE url = $1", event.url) is not None
    row = event.row(gone=gone)
    await conn.execute(
        "INSERT INTO deliveries (id, task_id, api_key_id, event_type, url, status,"
        " next_attempt_at, event_at, dead_at, last_error, progress)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
        row.id, row.task_id, row.api_key_id, row.event_type, row.url, row.status,
        row.next_attempt_at, row.event_at, row.dead_at, row.last_error, row.progress,
    )  # fmt: skip
    if row.status == "pending":
        await notify(conn, "deliverer")


class PgDeliveries(PgBase):
    """Mixed into `PostgresStorage`."""

    async def add_signing_secret(
        self, api_key_id: str, secret: str, now: float, retire_others_at: float | None
    ) -> None:
        """Add a current secret; older current ones stop signing at `retire_others_at`."""

        async def op(conn: Conn) -> None:
            if retire_others_at is not None:
                await conn.execute(
                    "UPDATE signing_secrets SET expires_at = $1"
                    " WHERE api_key_id = $2 AND (expires_at IS NULL OR expires_at > $1)",
                    retire_others_at,
                    api_key_id,
                )
            await conn.execute(
                "INSERT INTO signing_secrets (api_key_id, secret, created_at) VALUES ($1, $2, $3)",
                api_key_id,
                secret,
                now,
            )

        await self._tx(op)

    async def signing_secrets(self, api_key_id: str, now: float) -> list[str]:
        """The secrets that sign right now, newest first."""
        sql = (
            "SELECT secret FROM signing_secrets WHERE api_key_id = $1"
            " AND (expires_at IS NULL OR expires_at > $2) ORDER BY id DESC"
        )
        return [row[0] for row in await self._fetch(sql, api_key_id, now)]

    async def claim_deliveries(
        self, now: float, lease_until: float, free: int, busy: Mapping[str, int], per_host: int
    ) -> list[Delivery]:
        """Lease due deliveries, at most `free` in all and `per_host` per destination host.

        The fair order is made from a plain read; then the first `free` deliveries in it that no
        other replica is claiming (`SKIP LOCKED`) and that are still due are locked and leased.
        `busy` counts this replica's sends, so the per-host cap holds per replica.
        """
        look = f"{_SELECT} WHERE next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2"
        lock = (
            f"{_SELECT} WHERE id = ANY($1::text[]) AND next_attempt_at <= $2"
            " ORDER BY array_position($1::text[], id) LIMIT $3 FOR UPDATE SKIP LOCKED"
        )

        async def op(conn: Conn) -> list[Delivery]:
            rows = await conn.fetch(look, now, candidates(free))
            fair = fair_share((Delivery(*row) for row in rows), len(rows), busy, per_host)
            # the rows as they are now (fresh, not as the plain read saw them), in fair order
            taken = [Delivery(*r) for r in await conn.fetch(lock, [d.id for d in fair], now, free)]
            for delivery in taken:
                delivery.next_attempt_at = lease_until
            await conn.execute(
                "UPDATE deliveries SET next_attempt_at = $1 WHERE id = ANY($2::text[])",
                lease_until,
                [d.id for d in taken],
            )
            return taken

        return await self._tx(op)

    async def record_attempt(self, delivery: Delivery, attempt: Attempt, gone: bool) -> None:
        """Store an attempt and the delivery's new state; a 410 retires its URL for good."""

        async def op(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO delivery_attempts (delivery_id, attempted_at, status_code,"
                " latency_ms, error) VALUES ($1, $2, $3, $4, $5)",
                delivery.id, attempt.attempted_at, attempt.status_code, attempt.latency_ms,
                attempt.error,
            )  # fmt: skip
            await conn.execute(
                "UPDATE deliveries SET status = $1, attempts = $2, next_attempt_at = $3,"
                " delivered_at = $4, dead_at = $5, last_error = $6 WHERE id = $7",
                delivery.status, delivery.attempts, delivery.next_attempt_at,
                delivery.delivered_at, delivery.dead_at, delivery.last_error, delivery.id,
            )  # fmt: skip
            if gone:
                await conn.execute(
                    "INSERT INTO gone_urls (url, at) VALUES ($1, $2)"
                    " ON CONFLICT (url) DO UPDATE SET at = EXCLUDED.at",
                    delivery.url,
                    attempt.attempted_at,
                )
                await conn.execute(
                    "UPDATE deliveries SET status = 'dead', next_attempt_at = NULL, dead_at = $1,"
                    " last_error = $2 WHERE url = $3 AND status = 'pending'",
                    attempt.attempted_at,
                    GONE,
                    delivery.url,
                )

        await self._tx(op)

    async def deliveries_of(self, task_id: str) -> list[tuple[Delivery, list[Attempt]]]:
        """A task's deliveries with every attempt, oldest first."""
        rows = await self._fetch(f"{_SELECT} WHERE task_id = $1 {_ORDER}", task_id)
        deliveries = [Delivery(*row) for row in rows]
        sql = (
            "SELECT delivery_id, attempted_at, status_code, latency_ms, error"
            " FROM delivery_attempts WHERE delivery_id = $1 ORDER BY id"
        )
        return [(d, [Attempt(*row) for row in await self._fetch(sql, d.id)]) for d in deliveries]

    async def redeliver(self, task_id: str, now: float) -> Delivery | None:
        """Queue the task's final event again (same id); an explicit redelivery un-gones its URL."""
        sql = f"{_SELECT} WHERE task_id = $1 AND event_type IN ({_EVENT_TYPES}) FOR UPDATE"

        async def op(conn: Conn) -> Delivery | None:
            row = await conn.fetchrow(sql, task_id)
            if row is None:
                return None
            delivery = Delivery(*row)
            await conn.execute("DELETE FROM gone_urls WHERE url = $1", delivery.url)
            await conn.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, dead_at = NULL"
                " WHERE id = $2",
                now,
                delivery.id,
            )
            await notify(conn, "deliverer")
            delivery.status, delivery.next_attempt_at, delivery.dead_at = "pending", now, None
            return delivery

        return await self._tx(op)

    async def replay_dead(self, api_key_id: str, since: float, now: float) -> int:
        """Re-queue the key's dead deliveries that died at or after `since`."""

        async def op(conn: Conn) -> int:
            rows = await conn.fetch(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, dead_at = NULL"
                " WHERE api_key_id = $2 AND status = 'dead' AND dead_at >= $3"
                " AND url NOT IN (SELECT url FROM gone_urls) RETURNING id",
                now,
                api_key_id,
                since,
            )
            if rows:
                await notify(conn, "deliverer")
            return len(rows)

        return await self._tx(op)
