"""SQLite backend (WAL): group commit (statements on the loop, COMMIT on a thread), fast point
reads, an aiosqlite reader."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite

from service.domain.errors import StorageUnavailable
from service.domain.records import ApiKey, Task, TaskRef
from service.domain.transitions import Decision
from service.storage.base import DuplicateIdempotencyKey, Event, seen_change
from service.storage.sqlite.assets import SQLiteAssets
from service.storage.sqlite.deliveries import SQLiteDeliveries, queue_event
from service.storage.sqlite.files import make_folder, open_failure
from service.storage.sqlite.limits import SQLiteLimits
from service.storage.sqlite.migrations import LATEST, MIGRATIONS
from service.storage.sqlite.ops import SQLiteOps
from service.storage.sqlite.rows import (
    SELECT_STATE,
    SELECT_TASK,
    TASK_COLUMNS,
    encode_column,
    insert_event,
    one_task,
    row_task,
    update_task_row,
)
from service.storage.sqlite.stats import SQLiteStats
from service.storage.sqlite.writer import GroupCommitWriter, storage_error

# The point-read connection's page cache. SQLite's default (2 MiB) cannot hold the interior
# pages of the task tables and indexes of a million-task database (about 6 MiB), so every
# lookup there missed on interior pages too; 8 MiB holds them (scripts/bench: lookups at 1M
# tasks went from 0.51 to 0.60 x hello, RSS still within 4 MB of the 10k-task figure).
FAST_READ_CACHE_KIB = 8192


def connect(path: str, busy_timeout_ms: int, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), usable from any thread."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys = ON")
    if read_only:
        conn.execute("PRAGMA query_only = ON")
    return conn


_SELECT_KEY = "SELECT id, name, prefix, created_at, revoked_at, demo FROM api_keys"
# A taken Idempotency-Key inserts nothing (rowcount 0) instead of failing, so it is told apart
# from any other conflict without reading an error message.
_INSERT_TASK = (
    f"INSERT INTO tasks ({', '.join(TASK_COLUMNS)}) VALUES ({', '.join('?' * len(TASK_COLUMNS))})"
    " ON CONFLICT (api_key_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
)


def _api_key(row: Any) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


def _migrate(conn: sqlite3.Connection) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > LATEST:
        raise StorageUnavailable(f"database schema {version} is newer than this code ({LATEST})")
    for number in range(version + 1, LATEST + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class SQLiteStorage(SQLiteAssets, SQLiteDeliveries, SQLiteStats, SQLiteOps, SQLiteLimits):
    """The `Storage` contract on a SQLite file."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
        batch_max: int = 256,
        on_commit: Callable[[float, int], None] | None = None,
        on_task_change: Callable[[str | None], None] | None = None,
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._batch_max = batch_max
        self._writer: GroupCommitWriter | None = None
        self._reader: aiosqlite.Connection | None = None
        self._fast: sqlite3.Connection | None = None
        self._on_commit = on_commit  # metrics: (perf_counter at start, batch size) per commit
        self._buckets = {}
        self._on_task_change = on_task_change  # live status (StorageOptions.on_task_change)

    def _writer_connection(self) -> sqlite3.Connection:
        conn = connect(self.path, self._busy_timeout_ms)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        return conn

    async def open(self) -> None:
        """Create the file if needed, switch to WAL, migrate, start the writer and readers."""
        make_folder(self.path)
        writer = GroupCommitWriter(
            self._writer_connection,
            self._batch_max,
            self._on_commit,
            busy_timeout_ms=self._busy_timeout_ms,
        )
        try:
            await writer.call(_migrate)
            # On the event loop: never wait long for a lock (WAL readers almost never have to).
            self._fast = connect(self.path, min(self._busy_timeout_ms, 50), read_only=True)
            self._fast.execute(f"PRAGMA cache_size = -{FAST_READ_CACHE_KIB}")
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader.row_factory = sqlite3.Row
            await self._reader.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await self._reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            await writer.close()
            await self.close()
            raise open_failure(self.path, exc) from exc
        self._writer = writer
        writer.start()

    async def close(self) -> None:
        """Commit queued writes, then close every connection."""
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._fast is not None:
            self._fast.close()
            self._fast = None

    def _fast_task(self, sql: str, params: tuple[Any, ...]) -> Task | None:
        rows = self._fast_rows(sql, params)
        return row_task(rows[0]) if rows else None

    async def ping(self) -> None:
        """Read through the reader and write through the group-commit writer."""
        try:
            await self._read_conn().execute("SELECT 1")
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

        def touch(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA user_version")

        await self._write(touch)

    async def schema_version(self) -> int:
        """Return `PRAGMA user_version`."""
        async with self._read_conn().execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def api_key_by_id(self, key_id: str) -> ApiKey | None:
        """Find an active key by id (the primary key)."""
        rows = self._fast_rows(f"{_SELECT_KEY} WHERE id = ? AND revoked_at IS NULL", (key_id,))
        return _api_key(rows[0]) if rows else None

    async def create_api_key(self, key: ApiKey, key_hash: bytes) -> None:
        """Insert a key row."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys (id, name, prefix, key_hash, created_at, demo)"
                " VALUES (?,?,?,?,?,?)",
                (key.id, key.name, key.prefix, key_hash, key.created_at, int(key.demo)),
            )

        await self._write(op)

    async def list_api_keys(self) -> list[ApiKey]:
        """Every key, newest first."""
        sql = f"{_SELECT_KEY} ORDER BY created_at DESC"
        async with self._read_conn().execute(sql) as cur:
            return [_api_key(row) for row in await cur.fetchall()]

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        """Set revoked_at on the key with this id or prefix."""

        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE (id = ? OR prefix = ?)"
                " AND revoked_at IS NULL",
                (now, key_id, key_id),
            )
            return cur.rowcount > 0

        return bool(await self._write(op))

    async def api_key_by_hash(self, key_hash: bytes) -> ApiKey | None:
        """Find an active key by hash (a fast indexed read)."""
        sql = f"{_SELECT_KEY} WHERE key_hash = ? AND revoked_at IS NULL"
        rows = self._fast_rows(sql, (key_hash,))
        return _api_key(rows[0]) if rows else None

    async def insert_task(self, task: Task) -> None:
        """Insert a task; a taken Idempotency-Key raises `DuplicateIdempotencyKey`."""
        values = tuple(encode_column(c, getattr(task, c)) for c in TASK_COLUMNS)

        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(_INSERT_TASK, values).rowcount == 1

        try:
            inserted = await self._write(op)
        except sqlite3.IntegrityError as exc:  # another unique column (id, token): a bug
            raise StorageUnavailable(f"could not store task: {exc}") from exc
        if not inserted:  # the Idempotency-Key's unique index said no
            raise DuplicateIdempotencyKey(task.idempotency_key)

    async def task(self, task_id: str, api_key_id: str | None = None) -> Task | None:
        """Fetch by id (and owner)."""
        if api_key_id is None:
            return self._fast_task(f"{SELECT_TASK} WHERE id = ?", (task_id,))
        sql = f"{SELECT_TASK} WHERE id = ? AND api_key_id = ?"
        return self._fast_task(sql, (task_id, api_key_id))

    async def task_by_idempotency_key(self, api_key_id: str, key: str) -> Task | None:
        """Fetch by (owner, Idempotency-Key)."""
        sql = f"{SELECT_TASK} WHERE api_key_id = ? AND idempotency_key = ?"
        return self._fast_task(sql, (api_key_id, key))

    async def task_by_token_hash(self, token_hash: bytes) -> TaskRef | None:
        """Fetch the callback target by token hash (three columns, no JSON decoding)."""
        sql = "SELECT id, upstream_id, status FROM tasks WHERE token_hash = ?"
        rows = self._fast_rows(sql, (token_hash,))
        return TaskRef(*rows[0]) if rows else None

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
        where, params = ["api_key_id = ?"], [api_key_id]
        for column, value in (("status", status), ("model", model), ("seq <", before_seq)):
            if value is not None:
                where.append(f"{column} ?" if "<" in column else f"{column} = ?")
                params.append(value)  # type: ignore[arg-type]  # str | int bound parameters
        sql = f"{SELECT_TASK} WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        try:
            async with self._read_conn().execute(sql, (*params, limit)) as cur:
                return [row_task(row) for row in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    async def apply(
        self, task_id: str, decide: Callable[[Task], Decision], event: Event | None
    ) -> Decision | None:
        """Read the task's state (no JSON payload: decoding it would cost the hot path), decide,
        and store the decision and the event in one transaction."""

        def op(conn: sqlite3.Connection) -> Decision | None:
            task = one_task(conn, f"{SELECT_STATE} WHERE id = ?", (task_id,))
            if task is None:
                return None
            decision = decide(task)
            if decision.changes:
                update_task_row(conn, task_id, decision.changes)
            if decision.copies:
                conn.executemany(
                    "INSERT OR IGNORE INTO assets (task_id, n, upstream_url, status,"
                    " next_attempt_at) VALUES (?, ?, ?, 'pending', ?)",
                    [(task_id, n, url, 0.0) for n, url in enumerate(decision.copies)],
                )
            for outbox_event in (decision.progress_event, decision.final_event):
                if outbox_event is not None:
                    queue_event(conn, outbox_event)
            if event is not None:
                insert_event(conn, event, decision)
            return decision

        result: Decision | None = await self._write(op)
        if result is not None and self._on_task_change is not None and seen_change(result.changes):
            self._on_task_change(task_id)  # live status: committed now
        return result

    async def claim_due(self, now: float, limit: int, lease_until: float) -> list[Task]:
        """Select due tasks and lease them in one write."""

        def op(conn: sqlite3.Connection) -> list[Task]:
            sql = f"{SELECT_TASK} WHERE next_poll_at <= ? ORDER BY next_poll_at LIMIT ?"
            cur = conn.execute(sql, (now, limit))
            tasks = [row_task(row) for row in cur.fetchall()]
            conn.executemany(
                "UPDATE tasks SET next_poll_at = ? WHERE id = ?",
                [(lease_until, t.id) for t in tasks],
            )
            return tasks

        result: list[Task] = await self._write(op)
        return result

    async def events(self, task_id: str) -> list[Event]:
        """All events of a task in arrival order."""
        sql = (
            "SELECT task_id, source, received_at, body, outcome, detail FROM events"
            " WHERE task_id = ? ORDER BY id"
        )
        async with self._read_conn().execute(sql, (task_id,)) as cur:
            return [Event(*row) for row in await cur.fetchall()]
