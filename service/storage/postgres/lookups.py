"""Point reads by a unique key, gathered: the lookups requests make at the same moment (a task
by id, a callback's task by token hash) share one `WHERE key = ANY($1)` statement instead of a
round trip each."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from typing import Any

from service.storage.postgres.core import DRIVER_ERRORS, Conn, no_nul, storage_error

BATCH_MAX = 512
PARALLEL = 2  # statements in flight at once per kind of lookup


class Lookup:
    """Rows of one `SELECT ... WHERE <unique key> = ANY($1::<type>[])`, found by that key.

    `sql` selects the key as its first column; `key_type` is the key's PostgreSQL type.
    """

    def __init__(
        self,
        sql: str,
        acquire: Callable[[], contextlib.AbstractAsyncContextManager[Conn]],
    ) -> None:
        self._sql = sql
        self._acquire = acquire
        self._waiting: dict[Hashable, list[asyncio.Future[Any]]] = {}
        self._running = 0

    async def row(self, key: Hashable) -> Any:
        """The row whose key is `key` (its columns after the key), or None."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(done)
        self._start()
        return await done

    def _start(self) -> None:
        if self._waiting and self._running < PARALLEL:
            self._running += 1
            asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # let this loop iteration's lookups join
            keys = list(self._waiting)[:BATCH_MAX]
            waiting = {key: self._waiting.pop(key) for key in keys}
            if waiting:
                await self._run(waiting)
        finally:
            self._running -= 1
            self._start()

    async def _run(self, waiting: dict[Hashable, list[asyncio.Future[Any]]]) -> None:
        try:
            async with self._acquire() as conn:
                keys = [no_nul(key) for key in waiting]
                rows = {row[0]: row for row in await conn.fetch(self._sql, keys)}
        except DRIVER_ERRORS as exc:
            error = storage_error(exc)
            for futures in waiting.values():
                for done in futures:
                    if not done.done():
                        done.set_exception(error)
            return
        for key, futures in waiting.items():
            found = rows.get(key)
            for done in futures:
                if not done.done():
                    done.set_result(None if found is None else found[1:])
