"""The background poller: finds results whose callbacks never came.

It polls tasks in poll mode (first a few seconds after submit, then with backoff) and tasks in
callback mode that have been silent for a while. Its schedule is the `next_poll_at` column, so
it survives restarts; claiming a batch leases it, so a crashed poll is simply retried later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from service.clock import Clock
from service.domain.errors import RelayError, UpstreamError
from service.domain.records import TERMINAL, Task
from service.domain.schedule import PollPolicy
from service.domain.transitions import Decision, decide, fail_locally
from service.jobs.ingest import poll_event
from service.storage import Event, Storage
from service.upstream.grsai import GrsaiClient

log = logging.getLogger("grsai_relay.poller")


class Poller:
    """Polls due tasks on a tick, a bounded number at a time."""

    def __init__(
        self,
        storage: Storage,
        upstream: GrsaiClient,
        policy: PollPolicy,
        clock: Clock,
        *,
        tick: float,
        batch: int,
        concurrency: int,
        lease: float,
        rng: random.Random | None = None,
        copy_results: bool = False,
        on_final: Callable[[], None] = lambda: None,
    ) -> None:
        self._storage = storage
        self._upstream = upstream
        self._policy = policy
        self._clock = clock
        self._tick = tick
        self._batch = batch
        self._lease = lease
        self._rng = rng or random.Random()
        self._copy_results = copy_results
        self._on_final = on_final
        self._slots = asyncio.Semaphore(concurrency)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.polls = 0

    def start(self) -> None:
        """Run the loop in the background."""
        self._task = asyncio.create_task(self._run(), name="grsai-poller")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the loop; polls still running after `grace` seconds are cancelled.

        A cancelled poll loses nothing: its task keeps its lease and is polled again later. Its
        HTTP request is not cancelled with it (the client detaches sends from their callers), so
        stopping cannot jam a connection pool.
        """
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def alive(self) -> bool:
        """True while the loop runs."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = await self.run_once()
            except RelayError as exc:  # storage unavailable: try again next tick
                log.warning("poller round failed: %s", exc.message)
                claimed = 0
            except Exception:  # keep the loop alive whatever one round hit
                log.exception("poller round crashed")
                claimed = 0
            if claimed < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._tick)

    async def run_once(self) -> int:
        """Claim the due tasks and poll them; return how many were claimed."""
        now = self._clock.now()
        tasks = await self._storage.claim_due(now, self._batch, now + self._lease)
        if tasks:
            await asyncio.gather(*(self._guarded(task) for task in tasks))
        return len(tasks)

    async def _guarded(self, task: Task) -> None:
        async with self._slots:
            try:
                await self.poll_task(task)
            except RelayError as exc:  # the lease brings it back later
                log.warning("poll of %s failed: %s", task.id, exc.message)
            except Exception:  # a bug on one task must not stop polling for all the others
                log.exception("poll of %s crashed; it is retried after its lease", task.id)

    async def poll_task(self, task: Task) -> None:
        """Poll one task and store what GrsAI says, or fail it if it is lost or too old."""
        now = self._clock.now()
        age = now - task.created_at
        if age > self._policy.max_age:
            await self._fail(task, "timeout", f"no result after {int(age)} s", now)
            return
        if task.upstream_id is None:
            if age > self._policy.submit_recovery_grace:
                message = "submission was interrupted before GrsAI's task id was stored"
                await self._fail(task, "submit_interrupted", message, now)
            else:
                await self._reschedule(task, now)
            return
        self.polls += 1
        try:
            obs = await self._upstream.poll(task.upstream_id)
        except UpstreamError as exc:
            log.info("poll of %s did not answer: %s", task.id, exc.message)
            await self._reschedule(task, now)
            return
        if obs is None:
            if age > self._policy.not_found_grace:
                await self._fail(task, "lost", "GrsAI does not know this task (code -22)", now)
            else:
                await self._reschedule(task, now)
            return
        event = poll_event(task, obs, now)
        attempts = task.poll_attempts + 1
        next_poll = self._policy.after_poll(attempts, now, self._rng.random())

        def apply_poll(current: Task) -> Decision:
            decision = decide(current, obs, now, copy_results=self._copy_results)
            changes = dict(decision.changes)
            if changes.get("status", current.status) not in ("succeeded", "failed"):
                changes |= {"next_poll_at": next_poll, "poll_attempts": attempts}
            return Decision(decision.outcome, changes, decision.detail, decision.copies)

        result = await self._storage.apply(
            task.id, apply_poll, event if obs.terminal else None, payload=False
        )
        if result is not None and result[0].changes.get("status") in TERMINAL:
            self._on_final()

    async def _reschedule(self, task: Task, now: float) -> None:
        attempts = task.poll_attempts + 1
        next_poll = self._policy.after_poll(attempts, now, self._rng.random())
        await self._storage.apply(
            task.id,
            lambda current: Decision(
                "applied",
                {} if current.terminal else {"next_poll_at": next_poll, "poll_attempts": attempts},
            ),
            None,
            payload=False,
        )

    async def _fail(self, task: Task, reason: str, error: str, now: float) -> None:
        log.warning("task %s failed locally: %s (%s)", task.id, reason, error)
        event = Event(task.id, "local", now, error.encode(), detail=reason)
        await self._storage.apply(
            task.id, lambda t: fail_locally(t, reason, error, now), event, payload=False
        )
        self._on_final()
