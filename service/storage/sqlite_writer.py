"""Group commit for SQLite: many writes share one transaction, each acknowledged after COMMIT.

A write is a plain function taking the `sqlite3` connection. All writes run on one dedicated
thread that owns the write connection: the queued writes of a batch go to that thread in a
single hop and run in one `BEGIN IMMEDIATE ... COMMIT`, each inside its own SAVEPOINT so one
failing write rolls back alone. Every caller's future is resolved only once the COMMIT holding
its write has returned, so nothing is acknowledged before it is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from service.errors import StorageUnavailable

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], Any]
Outcome = tuple[bool, Any]


def storage_error(exc: BaseException) -> StorageUnavailable:
    """Describe a database failure as a retryable `StorageUnavailable`."""
    return StorageUnavailable(f"database unavailable: {exc}")


def _run_batch(conn: sqlite3.Connection, ops: list[WriteOp]) -> list[Outcome]:
    """Run `ops` in one transaction (writer thread). Raises if the batch as a whole failed."""
    outcomes: list[Outcome] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            conn.execute("SAVEPOINT op")
            try:
                value = op(conn)
            except sqlite3.IntegrityError as exc:  # this write's own conflict
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                outcomes.append((False, exc))
                continue
            except sqlite3.Error:
                raise  # the whole transaction is in doubt: fail the batch
            except Exception as exc:  # an op's own error belongs to its caller only
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                outcomes.append((False, exc))
                continue
            conn.execute("RELEASE op")
            outcomes.append((True, value))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return outcomes


class GroupCommitWriter:
    """Owns the write connection on its own thread and commits queued writes in batches."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        batch_max: int,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        self._connect = connect
        self._batch_max = batch_max
        self.on_commit = on_commit
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[tuple[WriteOp, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer thread outside any batch (open, migrate, close)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_conn, fn)

    def _with_conn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    def start(self) -> None:
        """Start the batching loop."""
        self._task = asyncio.create_task(self._run(), name="sqlite-group-commit")

    async def submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Queue `op` and return its result once it is committed."""
        if self._closing or self._task is None or self._task.done():
            raise StorageUnavailable("database writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, future))
        return await future

    async def close(self) -> None:
        """Refuse new writes, commit the queued ones, close the connection and the thread."""
        self._closing = True
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            started = time.perf_counter()
            try:
                ops = [op for op, _ in batch]
                outcomes = await loop.run_in_executor(self._executor, self._commit, ops)
            except Exception as exc:  # the batch did not commit: every caller hears so
                error = storage_error(exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for (ok, value), (_, future) in zip(outcomes, batch, strict=True):
                    if future.done():  # the caller gave up; its write is committed anyway
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
            finally:
                if self.on_commit is not None:
                    self.on_commit(started, len(batch))
                for _ in batch:
                    self._queue.task_done()

    def _commit(self, ops: list[WriteOp]) -> list[Outcome]:
        if self._conn is None:
            self._conn = self._connect()
        return _run_batch(self._conn, ops)
