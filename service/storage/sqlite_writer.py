"""Group commit for SQLite: many writes share one transaction, each acknowledged after COMMIT.

Every write is a coroutine function taking the connection. The writer runs queued writes in
one `BEGIN IMMEDIATE ... COMMIT`, each inside its own SAVEPOINT so one failing write rolls back
alone, and resolves every caller's future only once the COMMIT holding its write has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite

from service.errors import StorageUnavailable

T = TypeVar("T")
WriteOp = Callable[[aiosqlite.Connection], Awaitable[Any]]


def storage_error(exc: sqlite3.Error) -> StorageUnavailable:
    """Describe a database failure as a retryable `StorageUnavailable`."""
    return StorageUnavailable(f"database unavailable: {exc}")


class GroupCommitWriter:
    """Serialises writes on one connection and commits them in batches."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        batch_max: int,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        self._conn = conn
        self.on_commit = on_commit
        self._batch_max = batch_max
        self._queue: asyncio.Queue[tuple[WriteOp, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the writer loop."""
        self._task = asyncio.create_task(self._run(), name="sqlite-group-commit")

    async def submit(self, op: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Queue `op` and return its result once it is committed."""
        if self._closing or self._task is None or self._task.done():
            raise StorageUnavailable("database writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, future))
        return await future

    async def close(self) -> None:
        """Refuse new writes, commit the queued ones, stop the loop."""
        self._closing = True
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            started = time.perf_counter()
            try:
                await self._commit(batch)
                if self.on_commit is not None:
                    self.on_commit(started, len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[tuple[WriteOp, asyncio.Future[Any]]]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            for op, _ in batch:
                outcomes.append(await self._run_one(op))
            await self._conn.execute("COMMIT")
        except Exception as exc:  # any failure here leaves the batch uncommitted
            with contextlib.suppress(Exception):
                await self._conn.execute("ROLLBACK")
            error = (
                storage_error(exc)
                if isinstance(exc, sqlite3.Error)
                else StorageUnavailable(f"database write failed: {exc!r}")
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (ok, value), (_, future) in zip(outcomes, batch, strict=True):
            if future.done():  # the caller gave up (cancelled); its write is committed anyway
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def _run_one(self, op: WriteOp) -> tuple[bool, Any]:
        await self._conn.execute("SAVEPOINT op")
        try:
            value = await op(self._conn)
        except sqlite3.IntegrityError as exc:  # this write's own conflict: roll back only it
            await self._rollback_op()
            return False, exc
        except sqlite3.Error:
            raise  # the whole transaction is in doubt: fail the batch
        except Exception as exc:  # an op's own error belongs to its caller only
            await self._rollback_op()
            return False, exc
        await self._conn.execute("RELEASE op")
        return True, value

    async def _rollback_op(self) -> None:
        await self._conn.execute("ROLLBACK TO op")
        await self._conn.execute("RELEASE op")
