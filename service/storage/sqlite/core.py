"""What every SQLite mixin shares: the writer, the reader, and fast point reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite

from service.domain.errors import StorageUnavailable
from service.storage.sqlite.writer import GroupCommitWriter, storage_error

T = TypeVar("T")


class SQLiteBase:
    """Three ways in, each for its kind of work.

    - `_write(op)`: a write (or a read that must see the writer's view), group-committed by
      the writer; `heavy=True` for one that may take long (its batch leaves the event loop).
    - `_fast_rows(sql, params)`: a short indexed read run right on the event loop through its
      own read-only connection: a thread hop would cost more than the read itself (WAL
      readers never wait for the writer).
    - `_read_conn()`: the aiosqlite reader for anything that may scan or return many rows.
    """

    _writer: GroupCommitWriter | None
    _reader: aiosqlite.Connection | None
    _fast: sqlite3.Connection | None
    _on_task_change: Callable[[str | None], None] | None  # live status (StorageOptions)

    async def _write(self, op: Callable[[sqlite3.Connection], T], *, heavy: bool = False) -> T:
        if self._writer is None:
            raise StorageUnavailable("database is not open")
        return await self._writer.submit(op, heavy=heavy)

    def _fast_rows(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        if self._fast is None:
            raise StorageUnavailable("database is not open")
        try:
            return self._fast.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    def _read_conn(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StorageUnavailable("database is not open")
        return self._reader
