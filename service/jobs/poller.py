"""The background poller: finds results whose callbacks never came.

It polls tasks in poll mode (first a few seconds after submit, then with backoff) and tasks in
callback mode that have been silent for a while. Its schedule is the `next_poll_at` column, so
it survives restarts; claiming a batch leases it, so a crashed poll is simply retried later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable

from service.clock import Clock
from service.domain.errors import RelayError, UpstreamError
from service.domain.records import TERMINAL, Task
from service.domain.schedule import PollPolicy
from service.domain.transitions import Decision, decide, fail_locally, wakes_outbox
from service.jobs.ingest import poll_event
from service.jobs.worker import QueueWorker
from service.storage import Event, Storage
from service.upstream.grsai import GrsaiClient

log = logging.getLogger("grsai_relay.poller")


class Poller(QueueWorker):
    """Polls due tasks on a tick, a bounded number at a time.

    A round claims up to `batch` due tasks and polls them, `concurrency` at a time, before it
    returns; a full batch means more are likely due, so the next round starts at once.
    """

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
        on_silent: Callable[[str], None] = lambda task_id: None,
    ) -> None:
        super().__init__("poller", tick, log)
        self._storage = storage
        self._upstream = upstream
        self._policy = policy
        self._clock = clock
        self._batch = batch
        self._lease = lease
        self._rng = rng or random.Random()
        self._copy_results = copy_results
        self._on_final = on_final
        self._on_silent = on_silent  # a callback-mode task heard nothing in its silence window
        self._slots = asyncio.Semaphore(concurrency)
        self.polls = 0

    def more_waiting(self, claimed: int) -> bool:
        """A full batch: more tasks are likely due now."""
        return claimed >= self._batch

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
        if task.mode == "callback" and task.last_event_at is None:
            self._on_silent(task.id)
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
            if decision.changes.get("status", current.status) in TERMINAL:
                return decision
            schedule = {"next_poll_at": next_poll, "poll_attempts": attempts}
            return dataclasses.replace(decision, changes={**decision.changes, **schedule})

        decision = await self._storage.apply(task.id, apply_poll, event if obs.terminal else None)
        if decision is not None and wakes_outbox(decision):
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
        )

    async def _fail(self, task: Task, reason: str, error: str, now: float) -> None:
        log.warning("task %s failed locally: %s (%s)", task.id, reason, error)
        event = Event(task.id, "local", now, error.encode(), detail=reason)
        await self._storage.apply(task.id, lambda t: fail_locally(t, reason, error, now), event)
        self._on_final()
