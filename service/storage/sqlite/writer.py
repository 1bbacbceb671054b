"""Group commit for SQLite: many writes share one transaction, each acknowledged after COMMIT.

A write is a plain function taking the `sqlite3` connection. Queued writes are taken in
batches; a batch runs in one `BEGIN IMMEDIATE ... COMMIT`; when one write fails, the batch is
run again with each write in its own SAVEPOINT, so the failing write rolls back alone. Every
caller's future is resolved only once the COMMIT holding its write has returned, so nothing is
acknowledged before it is durable.

Where a batch runs: its statements are short indexed writes, so they run right on the event
loop (on a thread, each statement would cost a GIL hand-off while the loop is busy). What
waits on the disk or on a lock goes to the writer's own thread: the COMMIT (it writes the WAL,
and fsyncs it under `synchronous=FULL`), a batch that finds the database locked by another
process (it waits there for up to the busy timeout), and heavy writes (bulk deletes). The
loop's connection never checkpoints; a background checkpointer on its own connection and
thread copies the WAL back instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from service.domain.errors import StorageUnavailable

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], Any]
Outcome = tuple[bool, Any]
Queued = tuple[WriteOp, "asyncio.Future[Any]", bool]  # op, its caller's future, heavy

log = logging.getLogger("grsai_relay.storage")


def storage_error(exc: BaseException) -> StorageUnavailable:
    """Describe a database failure as a retryable `StorageUnavailable`."""
    return StorageUnavailable(f"database unavailable: {exc}")


def _run_ops(conn: sqlite3.Connection, ops: list[WriteOp]) -> list[Outcome]:
    """Run `ops` inside the open transaction; raise if the batch as a whole failed.

    Optimistic: the ops run back to back. If one fails on its own (a constraint, an error in
    its decision), the transaction is rolled back, begun again, and the batch run again with
    every op in its own SAVEPOINT, so the failure stays with its caller. Ops are functions of
    the database state, so running one twice is safe. (No savepoint around the whole batch:
    SQLite would copy every page the batch touches into a statement journal, which spills to
    a temporary file past 64 KiB.)
    """
    try:
        outcomes: list[Outcome] = [(True, op(conn)) for op in ops]
    except sqlite3.Error as exc:
        if not isinstance(exc, sqlite3.IntegrityError):
            raise  # the whole transaction is in doubt: fail the batch
        outcomes = []  # a write's own conflict: isolate it below
    except Exception:  # an op's own error: isolate it below
        outcomes = []
    if len(outcomes) == len(ops):
        return outcomes
    conn.execute("ROLLBACK")
    # Should another process take the lock in this instant, the batch fails as a whole
    # (StorageUnavailable: nothing was acknowledged, callers may retry).
    conn.execute("BEGIN IMMEDIATE")
    return _run_isolated(conn, ops)


def _run_isolated(conn: sqlite3.Connection, ops: list[WriteOp]) -> list[Outcome]:
    """Run `ops` each in its own SAVEPOINT, so one failing write rolls back alone."""
    outcomes: list[Outcome] = []
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
    return outcomes


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def _run_batch(conn: sqlite3.Connection, ops: list[WriteOp]) -> list[Outcome]:
    """Run `ops` in one transaction. Raises if the batch as a whole failed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcomes = _run_ops(conn, ops)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return outcomes


def _locked(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class GroupCommitWriter:
    """Owns the write connection and commits queued writes in batches (see module doc)."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        batch_max: int,
        on_commit: Callable[[float, int], None] | None = None,
        *,
        busy_timeout_ms: int = 5000,
        checkpoint_every: float = 0.5,
    ) -> None:
        self._connect = connect
        self._batch_max = batch_max
        self.on_commit = on_commit
        self._busy_timeout_ms = busy_timeout_ms
        self._checkpoint_every = checkpoint_every
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-ckpt")
        self._conn: sqlite3.Connection | None = None
        self._ckpt_conn: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[Queued] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._ckpt_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._commits = 0  # since the last checkpoint
        self._checkpointing = False
        # (WAL frames, frames copied back) of the last finished checkpoint
        self.last_checkpoint: tuple[int, int] | None = None
        self._checkpoint_done = asyncio.Condition()

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer thread outside any batch (open, migrate, close)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_conn, fn)

    def _with_conn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._connection())

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def start(self) -> None:
        """Start the batching loop and the checkpointer; the loop's connection stops waiting."""
        conn = self._connection()
        conn.execute("PRAGMA busy_timeout = 0")  # on the loop: a lock sends the batch away
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer does it off the loop
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="sqlite-group-commit")
        self._ckpt_task = self._loop.create_task(self._checkpoints(), name="sqlite-checkpoint")

    async def submit(self, op: Callable[[sqlite3.Connection], T], *, heavy: bool = False) -> T:
        """Queue `op` and return its result once it is committed.

        `heavy`: the write may take long (a bulk delete), so its batch runs on the thread.
        """
        if self._closing or self._loop is None or self._task is None or self._task.done():
            raise StorageUnavailable("database writer is not running")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put_nowait((op, future, heavy))
        return await future

    async def close(self) -> None:
        """Refuse new writes, commit the queued ones, close the connections and threads."""
        self._closing = True
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ckpt_task is not None:
            self._ckpt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ckpt_task
        loop = asyncio.get_running_loop()
        if self._ckpt_conn is not None:
            ckpt, self._ckpt_conn = self._ckpt_conn, None
            await loop.run_in_executor(self._checkpointer, ckpt.close)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await loop.run_in_executor(self._executor, conn.close)
        self._checkpointer.shutdown(wait=True)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            started = time.perf_counter()
            try:
                ops = [op for op, _, _ in batch]
                outcomes = await self._commit(ops, heavy=any(h for _, _, h in batch))
            except Exception as exc:  # the batch did not commit: every caller hears so
                error = storage_error(exc)
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                self._commits += 1
                for (ok, value), (_, future, _) in zip(outcomes, batch, strict=True):
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

    async def _commit(self, ops: list[WriteOp], *, heavy: bool) -> list[Outcome]:
        """Run one batch: on the loop when nothing in it may wait, else on the thread."""
        if heavy:
            return await self._in_thread(ops)
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
            return await self._in_thread(ops)  # another process writes: wait there, not here
        try:
            outcomes = _run_ops(conn, ops)
            # The COMMIT writes the WAL (and fsyncs it under FULL): system calls, with the GIL
            # released, on the thread, while the loop serves on. One hand-off per batch.
            await self._running().run_in_executor(self._executor, conn.execute, "COMMIT")
        except BaseException:  # never leave the connection inside a transaction
            _rollback(conn)
            raise
        return outcomes

    def _running(self) -> asyncio.AbstractEventLoop:
        """The loop `start` ran on (asking asyncio for it costs a getpid() call on 3.11)."""
        assert self._loop is not None
        return self._loop

    async def _in_thread(self, ops: list[WriteOp]) -> list[Outcome]:
        """Run a batch on the writer thread, waiting up to the busy timeout for the lock."""
        return await self._running().run_in_executor(self._executor, self._patient_batch, ops)

    def _patient_batch(self, ops: list[WriteOp]) -> list[Outcome]:
        conn = self._connection()
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        try:
            return _run_batch(conn, ops)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    async def _checkpoints(self) -> None:
        """Copy the WAL back into the database file now and then, off the event loop."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._checkpoint_every)
            if not self._commits:
                continue
            self._commits = 0
            self._checkpointing = True
            try:
                done = await loop.run_in_executor(self._checkpointer, self._checkpoint)
            except sqlite3.Error as exc:  # the next round tries again
                log.warning("WAL checkpoint failed: %s", exc, extra={"event": "checkpoint"})
                self._commits += 1  # so the next round tries again
                done = None
            finally:
                self._checkpointing = False
            async with self._checkpoint_done:
                self.last_checkpoint = done or self.last_checkpoint
                self._checkpoint_done.notify_all()

    def _file_current(self) -> bool:
        """True when the database file itself holds every commit: a checkpoint copied the
        whole WAL back, none runs now, and nothing was committed since."""
        done = self.last_checkpoint
        full = done is not None and done[0] == done[1]
        return full and not self._commits and not self._checkpointing

    async def checkpointed(self) -> tuple[int, int]:
        """Wait until a checkpoint has copied every commit so far into the database file (and
        none is running); return its (WAL frames, frames copied back). Until more commits come,
        the file is then complete and still, so it may be read without the WAL (backups,
        tests). Waits on the checkpointer's reports, never on a timer."""
        async with self._checkpoint_done:
            await self._checkpoint_done.wait_for(self._file_current)
            assert self.last_checkpoint is not None
            return self.last_checkpoint

    def _checkpoint(self) -> tuple[int, int]:
        if self._ckpt_conn is None:
            self._ckpt_conn = self._connect()
        _, wal, copied = self._ckpt_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(wal), int(copied)
