"""Live status: who is waiting for which task to change, woken when a write changed it.

The storage backends call `TaskWatch.changed(task_id)` after a committed change to a task that
a client can see (`StorageOptions.on_task_change`; on PostgreSQL also for changes committed by
other processes, heard through the database's notifications). A long-poll or an event stream
holds a `Watcher` while it waits: it never reads the database in a loop, only once per wake.

Bounded: a task's entry exists only while someone watches it (the last watcher to leave removes
it), and `close()` (the server is stopping) wakes every watcher for good, so open streams end
at once instead of holding the shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType


async def _take(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`, then clear it; True if it was set."""
    if not event.is_set():
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            return False
    event.clear()
    return True


class Watcher:
    """One waiter on one task: `wait` returns once the task changed since the last wait began
    (a change between two waits is not lost: it is remembered until the next wait)."""

    __slots__ = ("_event", "_group", "_hub", "task_id")

    def __init__(self, hub: TaskWatch, task_id: str, group: WatchGroup | None = None) -> None:
        self._hub = hub
        self.task_id = task_id
        self._group = group
        self._event = asyncio.Event() if group is None else group._event

    def __enter__(self) -> Watcher:
        self._hub._add(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._hub._remove(self)

    def wake(self) -> None:
        """The task may have changed (or the hub closed): the next or current wait returns."""
        if self._group is not None:
            self._group.woken.add(self.task_id)
        self._event.set()

    @property
    def closed(self) -> bool:
        """True once the hub closed: stop waiting and answer now."""
        return self._hub.closed

    async def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for a change; True if one came (or the hub closed)."""
        return await _take(self._event, seconds)


class WatchGroup:
    """One waiter on several tasks (a page of them): `wait` returns once any of them changed,
    and `woken` names those that did (the caller reads them and clears it)."""

    def __init__(self, hub: TaskWatch, task_ids: Iterable[str]) -> None:
        self._event = asyncio.Event()
        self.woken: set[str] = set()
        self._members = [Watcher(hub, task_id, self) for task_id in dict.fromkeys(task_ids)]
        self._hub = hub

    def __enter__(self) -> WatchGroup:
        for member in self._members:
            member.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for member in self._members:
            member.__exit__(kind, exc, tb)

    def wake(self) -> None:
        """Return from the current or next wait (e.g. the client went away)."""
        self._event.set()

    @property
    def closed(self) -> bool:
        """True once the hub closed: stop waiting and answer now."""
        return self._hub.closed

    async def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for a change of any member; True if one came (or the hub
        closed)."""
        return await _take(self._event, seconds)


class TaskWatch:
    """Per task id, the watchers to wake when that task changes (one per process run)."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[Watcher]] = {}
        self.closed = False

    def watch(self, task_id: str) -> Watcher:
        """A watcher on `task_id`, registered while its `with` block runs. Register first, then
        read the task: a change committed after the read then always wakes it."""
        return Watcher(self, task_id)

    def watch_all(self, task_ids: Iterable[str]) -> WatchGroup:
        """One watcher on every task of `task_ids` (registered while its `with` block runs)."""
        return WatchGroup(self, task_ids)

    def changed(self, task_id: str | None) -> None:
        """A committed write changed `task_id` (None: any task may have changed, e.g. the
        database's notifications were lost for a while): wake its watchers."""
        if task_id is None:
            self._wake_all()
            return
        watchers = self._watchers.get(task_id)
        if watchers:
            for watcher in watchers:
                watcher.wake()

    def close(self) -> None:
        """The server is stopping: wake every watcher now and every later one at once."""
        self.closed = True
        self._wake_all()

    def open(self) -> None:
        """A new run of the app: watchers wait again."""
        self.closed = False

    @property
    def tasks(self) -> int:
        """How many task ids have watchers now."""
        return len(self._watchers)

    @property
    def watchers(self) -> int:
        """How many watchers wait now."""
        return sum(len(group) for group in self._watchers.values())

    def _wake_all(self) -> None:
        for group in self._watchers.values():
            for watcher in group:
                watcher.wake()

    def _add(self, watcher: Watcher) -> None:
        self._watchers.setdefault(watcher.task_id, set()).add(watcher)
        if self.closed:
            watcher.wake()

    def _remove(self, watcher: Watcher) -> None:
        group = self._watchers.get(watcher.task_id)
        if group is None:
            return
        group.discard(watcher)
        if not group:
            del self._watchers[watcher.task_id]


class StreamSlots:
    """Open event streams per API key, at most `limit` each (an entry only while one is open)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def take(self, key_id: str) -> bool:
        """Count one more open stream of `key_id`; False (nothing counted) if at the limit."""
        count = self._open.get(key_id, 0)
        if count >= self.limit:
            return False
        self._open[key_id] = count + 1
        return True

    def give_back(self, key_id: str) -> None:
        """A stream of `key_id` ended."""
        count = self._open.get(key_id, 0) - 1
        if count > 0:
            self._open[key_id] = count
        else:
            self._open.pop(key_id, None)

    def open_streams(self, key_id: str) -> int:
        """How many streams of `key_id` are open now."""
        return self._open.get(key_id, 0)
