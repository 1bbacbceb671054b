"""What every PostgreSQL mixin shares: the pool, transactions that retry a lost race, errors
as `StorageUnavailable`, and the work notices sent to (and heard from) other replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import asyncpg

from service.domain.errors import StorageUnavailable

T = TypeVar("T")
log = logging.getLogger("grsai_relay.storage")

# NOTIFY channel: the payload names the queue with new work ("copier", "deliverer").
WORK_CHANNEL = "grsai_relay_work"
# A notice whose payload starts so names tasks a client can see changed (live status):
# `task:<id>,<id>,...`, at most NOTICE_BYTES long (PostgreSQL refuses payloads of 8000 bytes).
TASK_NOTICE = "task:"
NOTICE_BYTES = 7000
# Transactions that lost a race to another one (a deadlock, a serialization failure) are run
# again: they changed nothing, and `apply`'s decide may run more than once by contract.
RETRIES = 5
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
# What the driver raises when the server or the network fails (never a bug in a decision).
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. a connection the server cut, caught mid-operation
    OSError,
    TimeoutError,
)
OPEN_ERRORS: tuple[type[BaseException], ...] = (*DRIVER_ERRORS, ValueError)  # ValueError: a bad URL


def no_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL. A NUL from outside (an id in a URL, an error message from
    GrsAI) becomes U+FFFD: a lookup finds nothing (404, never a 503) and a write stores the rest
    of the text instead of failing. Other values pass unchanged."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def storage_error(exc: BaseException) -> StorageUnavailable:
    """Describe a database failure as a retryable `StorageUnavailable`."""
    return StorageUnavailable(f"database unavailable: {type(exc).__name__}: {exc}")


class Conn(Protocol):
    """The part of `asyncpg.Connection` the backend uses (asyncpg ships no type hints)."""

    async def execute(self, query: str, *args: Any) -> str: ...

    async def executemany(self, command: str, args: Sequence[Sequence[Any]]) -> None: ...

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...


Tx = Callable[[Conn], Awaitable[T]]


class PgBase:
    """Two ways in: `_tx(fn)` runs `fn(conn)` in one transaction (retried when it lost a race),
    and `_fetch`/`_fetchrow`/`_fetchval` run one statement on a pooled connection."""

    _pool: asyncpg.Pool | None
    _acquire_timeout: float
    _on_task_change: Callable[[str | None], None] | None  # live status (StorageOptions)

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageUnavailable("database is not open")
        return self._pool

    async def _tx(self, fn: Tx[T]) -> T:
        pool = self._ready()
        for attempt in range(RETRIES):
            try:
                async with (
                    pool.acquire(timeout=self._acquire_timeout) as conn,
                    conn.transaction(),
                ):
                    return await fn(conn)
            except _RETRYABLE as exc:
                if attempt == RETRIES - 1:
                    raise StorageUnavailable(
                        "database busy: a transaction kept losing races"
                    ) from exc
                await asyncio.sleep(0.005 * (attempt + 1))
            except DRIVER_ERRORS as exc:
                raise storage_error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            rows: list[Any] = await self._ready().fetch(
                sql, *args, timeout=self._acquire_timeout * 6
            )
        except DRIVER_ERRORS as exc:
            raise storage_error(exc) from exc
        return rows

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        row = await self._fetchrow(sql, *args)
        return row[0] if row is not None else None


async def notify(conn: Conn, queue: str) -> None:
    """Tell every replica (this one too) that `queue` has new work, once the transaction commits."""
    await conn.execute("SELECT pg_notify($1, $2)", WORK_CHANNEL, queue)


async def notify_task(conn: Conn, task_id: str) -> None:
    """Tell every replica that `task_id` changed (live status), once the transaction commits."""
    await conn.execute("SELECT pg_notify($1, $2)", WORK_CHANNEL, TASK_NOTICE + task_id)


def task_notices(task_ids: list[str]) -> list[str]:
    """The payloads naming `task_ids` (live status): as few as fit under NOTICE_BYTES each."""
    notices: list[str] = []
    part: list[str] = []
    size = len(TASK_NOTICE)
    for task_id in task_ids:
        if part and size + len(task_id.encode()) + 1 > NOTICE_BYTES:
            notices.append(TASK_NOTICE + ",".join(part))
            part, size = [], len(TASK_NOTICE)
        part.append(task_id)
        size += len(task_id.encode()) + 1
    if part:
        notices.append(TASK_NOTICE + ",".join(part))
    return notices


class WorkListener:
    """One connection that LISTENs for work notices and hands each to `on_work`; it reconnects
    after losing the server (the workers' ticks cover the gap)."""

    def __init__(
        self,
        dsn: str,
        on_work: Callable[[str], None],
        *,
        on_lost: Callable[[], None] | None = None,
        retry: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._on_work = on_work
        self._on_lost = on_lost  # notices may be missed from now until it listens again
        # server pids of this process's own connections: their notices are not passed on
        # (whoever sent one acted on it here already)
        self.own_pids: set[int] = set()
        self._retry = retry
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        """Listen in the background."""
        self._task = asyncio.create_task(self._run(), name="pg-work-listener")

    async def started(self, patience: float) -> None:
        """Wait until it listens (notices sent before are not heard), at most `patience` s; if
        it cannot connect by then it goes on trying in the background (the ticks cover the gap)."""
        try:
            async with asyncio.timeout(patience):
                await self.connected.wait()
        except TimeoutError:
            log.warning("work notices: not listening yet; workers rely on their ticks meanwhile")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _heard(self, _conn: object, pid: int, _channel: str, payload: str) -> None:
        if pid not in self.own_pids:
            self._on_work(payload)

    async def _run(self) -> None:
        while True:
            lost = asyncio.Event()
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(WORK_CHANNEL, self._heard)
                self.connected.set()
                await lost.wait()
                log.warning("work notices: lost the database connection; reconnecting")
            except DRIVER_ERRORS as exc:
                log.warning("work notices: cannot listen (%s); retrying", exc)
            finally:
                self.connected.clear()
                if self._on_lost is not None:
                    self._on_lost()
                if conn is not None and not conn.is_closed():
                    await asyncio.shield(conn.close(timeout=5))
            await asyncio.sleep(self._retry)
