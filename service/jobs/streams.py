"""Stream mode: one GrsAI connection per task, each frame stored and applied like a callback.

The submitter hands a stream-mode task here; a reader task POSTs it to GrsAI without `webHook`
and reads the answer's frames. The first frame naming GrsAI's task id answers the submitter
(which records it like any submit); every frame, before and after, is stored as an event
(`source` "stream") in the transaction of the change it causes, through the same `decide` as
callbacks and polls. Stream frames come over our own authenticated connection, so a terminal
one is believed without the verification poll a callback needs.

While a stream lives, each frame moves the task's poll out by a silence window (as callbacks
do). When the stream ends without a final frame, breaks, goes quiet for that window, or the
relay stops, the task is handed to the poller at once (`next_poll_at` = now). A relay killed
outright cannot do that: the task is then polled within the silence window of its last frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from service.clock import Clock
from service.domain.errors import RelayError, UpstreamError, UpstreamOutcomeUnknown, UpstreamTimeout
from service.domain.records import Task
from service.domain.schedule import PollPolicy
from service.domain.transitions import Decision, decide, wakes_outbox
from service.jobs.ingest import with_schedule
from service.storage import Event, Storage
from service.upstream.frames import StreamFrame
from service.upstream.grsai import GrsaiClient

log = logging.getLogger("grsai_relay.streams")
MAX_FRAMES = 10_000  # per stream: a host sending progress forever is handed to the poller


class _Ended(Exception):
    """The stream is over for a reason of ours (not an upstream failure)."""


class StreamSlot:
    """One reserved stream slot: given back once, by `release` or by the end of its stream."""

    def __init__(self, job: StreamJob) -> None:
        self._job = job
        self._held = True

    def release(self) -> None:
        """Give the slot back (nothing once it was already given back or handed to a stream)."""
        if self._held:
            self._held = False
            self._job._reserved -= 1

    def hand_over(self) -> None:
        """The slot now belongs to a stream, which gives it back when it ends."""
        if not self._held:
            raise RuntimeError("this stream slot was already given back")
        self._held = False


class StreamJob:
    """The open GrsAI streams of this process, at most `limit` at a time."""

    def __init__(
        self,
        storage: Storage,
        upstream: GrsaiClient,
        policy: PollPolicy,
        clock: Clock,
        *,
        limit: int,
        first_frame_timeout: float,
        copy_results: bool = False,
        on_final: Callable[[], None] = lambda: None,
        on_fallback: Callable[[], None] = lambda: None,
    ) -> None:
        self._storage = storage
        self._upstream = upstream
        self._policy = policy
        self._clock = clock
        self._limit = limit
        self._first_frame_timeout = first_frame_timeout
        self._copy_results = copy_results
        self._on_final = on_final
        self._on_fallback = on_fallback
        self._readers: dict[str, asyncio.Task[None]] = {}  # task id -> its reader
        self._reserved = 0
        self._closed = False

    @property
    def open(self) -> int:
        """Streams open (or being opened) now."""
        return len(self._readers)

    def reserve(self) -> StreamSlot | None:
        """Take a stream slot for a task about to be created; None when none is free."""
        if self._closed or self._reserved >= self._limit:
            return None
        self._reserved += 1
        return StreamSlot(self)

    async def submit(self, slot: StreamSlot, task: Task, path: str, body: dict[str, Any]) -> str:
        """Submit `task` in stream mode on `slot`; return GrsAI's task id.

        Raises the `UpstreamError` that ended the stream before it named the task, or
        `UpstreamTimeout` when it named none within the first-frame timeout.
        """
        slot.hand_over()
        first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        first.add_done_callback(_retrieved)  # its failure may come after nobody waits for it
        reader = asyncio.create_task(self._read(task, path, body, first), name=f"stream {task.id}")
        self._readers[task.id] = reader

        def ended(_: asyncio.Task[None]) -> None:
            self._readers.pop(task.id, None)
            self._reserved -= 1

        reader.add_done_callback(ended)
        try:
            async with asyncio.timeout(self._first_frame_timeout):
                # shielded: a client that hangs up does not end the stream, whose first
                # frame then binds the task all the same
                return await asyncio.shield(first)
        except TimeoutError as exc:
            reader.cancel()
            raise UpstreamTimeout(
                f"GrsAI's stream named no task within {self._first_frame_timeout:g} s; "
                "the task may or may not exist"
            ) from exc

    async def _read(
        self, task: Task, path: str, body: dict[str, Any], first: asyncio.Future[str]
    ) -> None:
        reason = "the stream ended without a final frame"
        try:
            async with self._upstream.submit_streaming(
                path, body, idle=self._policy.silence
            ) as frames:
                count = 0
                async for frame in frames:
                    if not first.done() and frame.upstream_id is not None:
                        first.set_result(frame.upstream_id)
                    if await self._store(task, frame):
                        return  # the task is final: nothing more to read
                    count += 1
                    if count >= MAX_FRAMES:
                        raise _Ended(f"more than {MAX_FRAMES} frames")
                    if self._clock.now() - task.created_at > self._policy.max_age:
                        raise _Ended("the task is older than TASK_MAX_AGE")
        except (UpstreamError, _Ended) as exc:
            if not first.done():
                first.set_exception(exc if isinstance(exc, UpstreamError) else _unknown(str(exc)))
                return
            reason = exc.message if isinstance(exc, UpstreamError) else str(exc)
        except RelayError as exc:  # the database refused a frame: the poller will catch up
            reason = f"a frame could not be stored: {exc.message}"
        except asyncio.CancelledError:
            if not first.done():
                first.set_exception(_unknown("the relay stopped before GrsAI named the task"))
                raise
            await self._fall_back(task.id, "the relay is stopping")
            raise
        if not first.done():
            first.set_exception(_unknown("GrsAI's stream ended before it named the task"))
            return
        await self._fall_back(task.id, reason)

    async def _store(self, task: Task, frame: StreamFrame) -> bool:
        """Store one frame and apply what it says; True when the task is final."""
        now = self._clock.now()
        obs = frame.observation
        if obs is None:
            event = Event(task.id, "stream", now, frame.raw, detail=frame.problem)
            decision = await self._storage.apply(task.id, _bind_only(frame), event)
            return decision is None
        final = False

        def apply(current: Task) -> Decision:
            nonlocal final
            final = current.terminal or obs.terminal
            decision = decide(current, obs, now, copy_results=self._copy_results)
            return with_schedule(decision, current, self._policy, now)

        event = Event(task.id, "stream", now, frame.raw)
        decision = await self._storage.apply(task.id, apply, event)
        if decision is None:
            return True  # the task is gone (purged)
        if wakes_outbox(decision):
            self._on_final()
        return final

    async def _fall_back(self, task_id: str, reason: str) -> None:
        """Hand a task whose stream ended early to the poller, now."""
        log.info("stream of task %s closed (%s); polling it instead", task_id, reason)
        now = self._clock.now()
        detail = f"{reason}; polling instead"
        event = Event(task_id, "stream", now, b"", outcome="deferred", detail=detail)

        def poll_now(current: Task) -> Decision:
            if current.terminal:
                return Decision("deferred", detail=detail)
            return Decision("deferred", {"next_poll_at": now, "poll_attempts": 0}, detail)

        try:
            await self._storage.apply(task_id, poll_now, event)
        except RelayError as exc:  # the silence window brings the poller all the same
            log.warning("could not hand task %s to the poller: %s", task_id, exc.message)
        self._on_fallback()

    async def stop(self, grace: float) -> None:
        """Close every stream now; each hands its task to the poller (within `grace`)."""
        self._closed = True
        readers = list(self._readers.values())
        for reader in readers:
            reader.cancel()
        if readers:
            await asyncio.wait(readers, timeout=grace)


def _retrieved(future: asyncio.Future[str]) -> None:
    if not future.cancelled():
        future.exception()


def _unknown(message: str) -> UpstreamOutcomeUnknown:
    return UpstreamOutcomeUnknown(message)


def _bind_only(frame: StreamFrame) -> Callable[[Task], Decision]:
    """What a frame without a task state does: binds the id it names, or is rejected."""

    def bind(current: Task) -> Decision:
        if frame.problem is not None:
            return Decision("rejected", detail=frame.problem)
        if current.upstream_id is None and frame.upstream_id is not None:
            return Decision(
                "applied", {"upstream_id": frame.upstream_id, "submit_state": "submitted"}
            )
        if current.upstream_id != frame.upstream_id:
            return Decision("rejected", detail="id does not match this task's upstream id")
        return Decision("duplicate", detail="the task id again")

    return bind
