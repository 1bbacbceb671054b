"""PostgreSQL backend (asyncpg): concurrent applies and point lookups share statements, a row
version check or row lock where a write reads what it changes, and `FOR UPDATE SKIP LOCKED`
leases so replicas never take the same job."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg

from service.domain.errors import StorageUnavailable
from service.domain.records import Task, TaskRef
from service.domain.transitions import Decision
from service.storage.base import DuplicateIdempotencyKey, Event, seen_change
from service.storage.columns import SELECT_STATE, SELECT_TASK, row_task
from service.storage.postgres.assets import PgAssets
from service.storage.postgres.batch import ApplyBatcher
from service.storage.postgres.core import (
    DRIVER_ERRORS,
    OPEN_ERRORS,
    TASK_NOTICE,
    Conn,
    WorkListener,
    notify,
    notify_task,
    storage_error,
)
from service.storage.postgres.deliveries import PgDeliveries, queue_event
from service.storage.postgres.keys import KEYS_NOTICE, PgKeys
from service.storage.postgres.limits import PgLimits
from service.storage.postgres.lookups import Lookup
from service.storage.postgres.ops import PgOps
from service.storage.postgres.rows import (
    INSERT_TASK,
    insert_event,
    one_task,
    task_values,
    update_task_row,
)
from service.storage.postgres.session import keep_session, migrate, safe_url, setup_connection

_BY_IDS = " WHERE id = ANY($1::text[])"
_BY_TOKENS = (
    "SELECT token_hash, id, upstream_id, status FROM tasks WHERE token_hash = ANY($1::bytea[])"
)


class PostgresStorage(PgKeys, PgAssets, PgDeliveries, PgOps, PgLimits):
    """The `Storage` contract on a PostgreSQL database, shared by any number of processes."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        busy_timeout_ms: int = 5000,
        on_work: Callable[[str], None] | None = None,
        on_task_change: Callable[[str | None], None] | None = None,
    ) -> None:
        self.url = url
        self._pool_size = pool_size
        self._acquire_timeout = max(busy_timeout_ms, 100) / 1000
        self._lock_timeout_ms = max(busy_timeout_ms, 100)
        self._pool = None
        self._on_work = on_work
        self._keys, self._keys_generation = {}, 0
        self._on_task_change = on_task_change  # live status (StorageOptions.on_task_change)
        self._listener = WorkListener(url, self._heard, on_lost=self._lost)
        self._batcher = ApplyBatcher(self._connection)
        self._by_id = Lookup(
            f"{SELECT_TASK.replace('SELECT ', 'SELECT id, ', 1)}{_BY_IDS}", self._connection
        )
        self._by_token = Lookup(_BY_TOKENS, self._connection)

    def _connection(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        return self._ready().acquire(timeout=self._acquire_timeout)  # type: ignore[no-any-return]

    async def _setup_connection(self, conn: Any) -> None:
        await setup_connection(conn)
        # a notice sent by one of this process's own connections: it already acted on it
        # (forgotten when the connection ends: the server may give its pid to another)
        pid, own = conn.get_server_pid(), self._listener.own_pids
        own.add(pid)
        conn.add_termination_listener(lambda _conn: own.discard(pid))

    def _heard(self, notice: str) -> None:
        if notice == KEYS_NOTICE:
            self.forget_keys()
        elif notice.startswith(TASK_NOTICE):
            if self._on_task_change is not None:
                for task_id in notice[len(TASK_NOTICE) :].split(","):
                    self._on_task_change(task_id)
        elif self._on_work is not None:
            self._on_work(notice)

    def _lost(self) -> None:
        """Notices may be missed until the listener is back: forget the keys, and let every
        live-status watcher look again."""
        self.forget_keys()
        if self._on_task_change is not None:
            self._on_task_change(None)

    async def open(self) -> None:
        """Connect the pool, migrate (under the advisory lock), and listen for work notices."""
        settings = {"lock_timeout": str(self._lock_timeout_ms), "application_name": "grsai-relay"}
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                timeout=10,
                command_timeout=60,
                server_settings=settings,
                init=self._setup_connection,
                reset=keep_session,
            )
        except OPEN_ERRORS as exc:
            raise StorageUnavailable(
                f"cannot open the database {safe_url(self.url)}: {exc}"
            ) from exc
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, DRIVER_ERRORS):
                raise storage_error(exc) from exc
            raise
        self._pool = pool
        self._listener.start()
        await self._listener.started(patience=10.0)

    async def close(self) -> None:
        """Stop listening and close every connection (each write committed when it returned)."""
        await self._listener.stop()
        self.forget_keys()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def ping(self) -> None:
        """Raise unless the server answers and would accept a write (not a read-only standby)."""
        writable = await self._fetchval(
            "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"
        )
        if not writable:
            raise StorageUnavailable("database unavailable: the server is read-only")

    async def schema_version(self) -> int:
        """The applied migration version."""
        return int(await self._fetchval("SELECT version FROM schema_version") or 0)

    async def insert_task(self, task: Task) -> None:
        """Insert a task; a taken Idempotency-Key raises `DuplicateIdempotencyKey` (the unique
        index decides, whichever replica got there first)."""
        inserted = await self._fetch(f"{INSERT_TASK} RETURNING seq", *task_values(task))
        if not inserted:
            raise DuplicateIdempotencyKey(task.idempotency_key)

    async def task(self, task_id: str, api_key_id: str | None = None) -> Task | None:
        """Fetch by id (and owner), in a lookup shared with concurrent ones."""
        row = await self._by_id.row(task_id)
        if row is None:
            return None
        task = row_task(row)
        return task if api_key_id is None or task.api_key_id == api_key_id else None

    async def task_by_idempotency_key(self, api_key_id: str, key: str) -> Task | None:
        """Fetch by (owner, Idempotency-Key)."""
        sql = f"{SELECT_TASK} WHERE api_key_id = $1 AND idempotency_key = $2"
        row = await self._fetchrow(sql, api_key_id, key)
        return row_task(row) if row is not None else None

    async def task_by_token_hash(self, token_hash: bytes) -> TaskRef | None:
        """Fetch the callback target by token hash, in a lookup shared with concurrent ones."""
        row = await self._by_token.row(token_hash)
        return TaskRef(row[0], row[1], row[2]) if row is not None else None

    async def list_tasks(
        self,
        api_key_id: str,
        *,
        status: str | None,
        model: str | None,
        limit: int,
        before_seq: int | None,
    ) -> list[Task]:
        """Keyset page of the owner's tasks, newest first."""
        where, params = ["api_key_id = $1"], [api_key_id]
        for clause, value in (("status =", status), ("model =", model), ("seq <", before_seq)):
            if value is not None:
                params.append(value)  # type: ignore[arg-type]  # str | int bound parameters
                where.append(f"{clause} ${len(params)}")
        sql = (
            f"{SELECT_TASK} WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ${len(params) + 1}"
        )
        return [row_task(row) for row in await self._fetch(sql, *params, limit)]

    async def apply(
        self, task_id: str, decide: Callable[[Task], Decision], event: Event | None
    ) -> Decision | None:
        """Decide on the task's current state and store the decision and the event atomically:
        two replicas applying to one task take turns, each deciding on the other's result.

        The common case is run with other concurrent applies in two statements
        (`postgres.batch`); a decision that queues work locks the task's row and decides again
        in one transaction."""
        self._ready()
        done, decision = await self._batcher.apply(task_id, decide, event)
        if not done:
            decision = await self._tx(lambda conn: _locked_apply(conn, task_id, decide, event))
        if decision is not None and self._on_task_change and seen_change(decision.changes):
            self._on_task_change(task_id)  # live status: committed now (others hear a notice)
        return decision

    async def claim_due(self, now: float, limit: int, lease_until: float) -> list[Task]:
        """Lease due tasks; rows another replica is claiming right now are skipped."""
        sql = (
            f"WITH due AS ({SELECT_TASK} WHERE next_poll_at <= $1 ORDER BY next_poll_at"
            " LIMIT $2 FOR UPDATE SKIP LOCKED),"
            " leased AS (UPDATE tasks SET next_poll_at = $3 FROM due WHERE tasks.id = due.id)"
            " SELECT * FROM due ORDER BY next_poll_at"
        )

        async def op(conn: Conn) -> list[Task]:
            return [row_task(row) for row in await conn.fetch(sql, now, limit, lease_until)]

        return await self._tx(op)

    async def events(self, task_id: str) -> list[Event]:
        """All events of a task in arrival order."""
        sql = (
            "SELECT task_id, source, received_at, body, outcome, detail FROM events"
            " WHERE task_id = $1 ORDER BY id"
        )
        return [Event(*row) for row in await self._fetch(sql, task_id)]


async def _locked_apply(
    conn: Conn, task_id: str, decide: Callable[[Task], Decision], event: Event | None
) -> Decision | None:
    """`apply` in one transaction that locks the task's row first."""
    task = await one_task(conn, f"{SELECT_STATE} WHERE id = $1 FOR UPDATE", task_id)
    if task is None:
        return None
    decision = decide(task)
    if decision.changes:
        await update_task_row(conn, task_id, decision.changes)
        if seen_change(decision.changes):  # live status: other replicas' watchers hear it
            await notify_task(conn, task_id)
    if decision.copies:
        await conn.executemany(
            "INSERT INTO assets (task_id, n, upstream_url, status, next_attempt_at)"
            " VALUES ($1, $2, $3, 'pending', 0) ON CONFLICT DO NOTHING",
            [(task_id, n, url) for n, url in enumerate(decision.copies)],
        )
        await notify(conn, "copier")
    for outbox_event in (decision.progress_event, decision.final_event):
        if outbox_event is not None:
            await queue_event(conn, outbox_event)
    if event is not None:
        await insert_event(conn, event, decision)
    return decision
