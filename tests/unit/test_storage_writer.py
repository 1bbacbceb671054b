"""Where the group-commit writer runs its work: the loop, its thread, and the checkpointer."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from service.domain.errors import StorageUnavailable
from service.storage.sqlite.backend import connect
from service.storage.sqlite.writer import GroupCommitWriter

LOOP_THREAD = threading.get_ident()


def opener(path: Path, synchronous: str = "NORMAL") -> Callable[[], sqlite3.Connection]:
    """A connection factory like the storage's own: WAL, the given synchronous level."""

    def open_() -> sqlite3.Connection:
        conn = connect(str(path), 5000)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        return conn

    return open_


def create_table(conn: sqlite3.Connection) -> None:
    """The one table these tests write to."""
    conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")


async def started(writer: GroupCommitWriter) -> GroupCommitWriter:
    """Create the table through the writer thread, then start batching."""
    await writer.call(create_table)
    writer.start()
    return writer


@pytest.fixture(name="writer")
async def _writer(tmp_path: Path) -> AsyncIterator[GroupCommitWriter]:
    writer = await started(GroupCommitWriter(opener(tmp_path / "w.db"), 64, busy_timeout_ms=5000))
    try:
        yield writer
    finally:
        await writer.close()


def insert(n: int) -> Callable[[sqlite3.Connection], int]:
    """A write that inserts `n` and says which thread ran it."""

    def op(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (n) VALUES (?)", (n,))
        return threading.get_ident()

    return op


def rows(path: Path, *, immutable: bool = False) -> list[int]:
    """The committed values, read by a fresh connection (immutable: the file alone, without
    the WAL or any lock, so only once the checkpointer reported the file complete and still)."""
    uri = f"file:{path}?immutable=1" if immutable else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True)
    try:
        return sorted(n for (n,) in conn.execute("SELECT n FROM t"))
    finally:
        conn.close()


async def test_light_writes_run_on_the_loop(writer: GroupCommitWriter, tmp_path: Path) -> None:
    """An ordinary write runs on the event loop's thread (no thread hop) and is committed."""
    threads = await asyncio.gather(*(writer.submit(insert(n)) for n in range(20)))
    assert set(threads) == {LOOP_THREAD}
    assert rows(tmp_path / "w.db") == list(range(20))


async def test_heavy_writes_leave_the_loop(writer: GroupCommitWriter, tmp_path: Path) -> None:
    """A write marked heavy runs on the writer's thread, and commits like any other."""
    thread = await writer.submit(insert(1), heavy=True)
    assert thread != LOOP_THREAD
    assert rows(tmp_path / "w.db") == [1]


async def test_a_locked_database_is_waited_for_off_the_loop(
    writer: GroupCommitWriter, tmp_path: Path
) -> None:
    """While another process holds the write lock, the batch waits on the thread; the loop
    keeps serving, and the write commits once the lock is released."""
    other = sqlite3.connect(str(tmp_path / "w.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticked = asyncio.Event()

    async def ticker() -> None:
        for _ in range(5):
            await asyncio.sleep(0.01)
        ticked.set()

    ticking = asyncio.create_task(ticker())
    write = asyncio.create_task(writer.submit(insert(7)))
    await ticked.wait()  # the loop runs while the write waits for the lock
    assert not write.done()
    other.execute("COMMIT")
    other.close()
    assert await write != LOOP_THREAD
    await ticking
    assert rows(tmp_path / "w.db") == [7]
    assert await writer.submit(insert(8)) == LOOP_THREAD  # back on the loop afterwards


async def test_a_lock_held_past_the_busy_timeout_fails_the_batch(tmp_path: Path) -> None:
    """A lock that outlasts BUSY_TIMEOUT fails the batch with StorageUnavailable, not a hang."""
    writer = await started(GroupCommitWriter(opener(tmp_path / "w.db"), 64, busy_timeout_ms=50))
    other = sqlite3.connect(str(tmp_path / "w.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageUnavailable, match="locked"):
            await writer.submit(insert(1))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await writer.submit(insert(2)) == LOOP_THREAD
    await writer.close()
    assert rows(tmp_path / "w.db") == [2]


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_statements_on_the_loop_commit_on_the_thread(
    tmp_path: Path, synchronous: str
) -> None:
    """A batch's statements run on the loop; its COMMIT (WAL writes, an fsync under FULL)
    runs on the writer's thread, so the loop goes on serving meanwhile."""
    writer = await started(GroupCommitWriter(opener(tmp_path / "w.db", synchronous), 64))
    traced: list[tuple[str, bool]] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(
            lambda sql: traced.append((sql.split()[0], threading.get_ident() == LOOP_THREAD))
        )

    await writer.call(trace)
    await asyncio.gather(*(writer.submit(insert(n)) for n in range(5)))
    await writer.close()
    assert ("INSERT", True) in traced
    assert ("INSERT", False) not in traced
    assert {on_loop for word, on_loop in traced if word == "COMMIT"} == {False}
    assert rows(tmp_path / "w.db") == list(range(5))


async def test_checkpointer_copies_the_wal_back(tmp_path: Path) -> None:
    """The loop's connection never checkpoints; the background checkpointer copies committed
    writes into the database file itself (read without the WAL once it reports so)."""
    path = tmp_path / "w.db"
    writer = await started(GroupCommitWriter(opener(path), 64, checkpoint_every=0.02))
    try:
        auto = await writer.call(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        assert auto == 0
        await asyncio.gather(*(writer.submit(insert(n)) for n in range(50)))
        wal, copied = await writer.checkpointed()  # reported by the checkpointer, not timed
        assert wal == copied > 0
        # no commit since, so no checkpoint is writing the file: reading it alone is safe
        assert rows(path, immutable=True) == list(range(50))
    finally:
        await writer.close()


async def test_a_failed_checkpoint_is_tried_again(tmp_path: Path) -> None:
    """A checkpoint that fails (say, the disk hiccups) is retried in a later round even if no
    new write comes, so the database file still catches up."""
    path = tmp_path / "w.db"
    writer = await started(GroupCommitWriter(opener(path), 64, checkpoint_every=0.02))
    real = writer._checkpoint
    failures = [sqlite3.OperationalError("disk I/O error")]

    def flaky() -> tuple[int, int]:
        if failures:
            raise failures.pop()
        return real()

    writer._checkpoint = flaky  # type: ignore[method-assign]  # inject one failure
    try:
        await asyncio.gather(*(writer.submit(insert(n)) for n in range(5)))
        await writer.checkpointed()
        assert not failures
        assert rows(path, immutable=True) == list(range(5))
    finally:
        await writer.close()
