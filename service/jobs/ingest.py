"""Receiving GrsAI's callbacks: authenticate by token, parse, verify terminal news, persist.

Every callback that reaches a known task is stored raw with its outcome, in the same
transaction as the state change it causes, before the 200 goes out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.clock import Clock
from service.domain.credentials import hash_secret, token_well_formed
from service.domain.errors import InvalidTaskObject, Malformed, NotFound, UpstreamError
from service.domain.observation import Observation, parse_task_object
from service.domain.records import TERMINAL, Task, TaskRef
from service.domain.schedule import PollPolicy
from service.domain.strict_json import loads_object
from service.domain.transitions import Decision, decide, wakes_outbox
from service.storage import Event, Storage
from service.upstream.grsai import GrsaiClient


def with_schedule(decision: Decision, task: Task, policy: PollPolicy, now: float) -> Decision:
    """Add the next poll time implied by news about `task` to `decision`."""
    if decision.outcome not in ("applied", "duplicate"):
        return decision
    if decision.changes.get("status", task.status) in TERMINAL:
        return decision
    next_poll = policy.after_news(task.mode, task.next_poll_at, now)
    schedule: dict[str, Any] = {}
    if next_poll != task.next_poll_at:
        schedule["next_poll_at"] = next_poll
    if task.poll_attempts:
        schedule["poll_attempts"] = 0
    if not schedule:
        return decision
    return dataclasses.replace(decision, changes={**decision.changes, **schedule})


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a verification poll said about a terminal callback."""

    observation: Observation | None  # the truth to apply (None: could not verify now)
    believed: bool
    detail: str


class CallbackIngestor:
    """Turns a callback POST into a stored event and (maybe) a state change."""

    def __init__(
        self,
        storage: Storage,
        upstream: GrsaiClient,
        policy: PollPolicy,
        clock: Clock,
        *,
        verify: bool,
        verify_timeout: float,
        copy_results: bool = False,
        on_final: Callable[[], None] = lambda: None,
        on_heard: Callable[[], None] = lambda: None,
    ) -> None:
        self._storage = storage
        self._upstream = upstream
        self._policy = policy
        self._clock = clock
        self._verify = verify
        self._verify_timeout = verify_timeout
        self._copy_results = copy_results
        self._on_final = on_final
        self._on_heard = on_heard  # a callback with a valid token arrived
        self._verifying: dict[str, tuple[asyncio.Lock, int]] = {}  # task id -> (lock, users)

    async def find_task(self, token: str) -> TaskRef:
        """The task a callback token belongs to; 404 with no detail otherwise."""
        task = None
        if token_well_formed(token):
            task = await self._storage.task_by_token_hash(hash_secret(token))
        if task is None:
            raise NotFound("not found")
        return task

    async def receive(self, task: TaskRef, raw: bytes) -> str:
        """Store and apply one callback body; return its outcome."""
        now = self._clock.now()
        self._on_heard()
        try:
            obs = parse_task_object(loads_object(raw))
        except Malformed as exc:
            await self._reject(task, raw, now, exc.message)
            raise
        if task.upstream_id is not None and obs.upstream_id != task.upstream_id:
            await self._reject(task, raw, now, "id does not match this task's upstream id")
            raise InvalidTaskObject("id does not belong to this task")
        event = Event(task.id, "callback", now, raw)
        if not (obs.terminal and not task.terminal and self._verify):
            return await self._apply(task, obs, event, now)
        # One verification per task at a time: a concurrent terminal callback waits, then finds
        # the task final (a duplicate) instead of polling GrsAI again.
        lock, users = self._verifying.get(task.id, (asyncio.Lock(), 0))
        self._verifying[task.id] = (lock, users + 1)
        try:
            async with lock:
                current = await self._storage.task(task.id)
                if current is None or current.terminal:
                    return await self._apply(task, obs, event, now)
                verdict = await self._check(task, obs)
                if verdict.observation is None:
                    return await self._defer(task, event, verdict.detail, now)
                event = Event(
                    task.id,
                    "callback",
                    now,
                    raw,
                    outcome=None if verdict.believed else "rejected",
                    detail=verdict.detail,
                )
                return await self._apply(task, verdict.observation, event, now)
        finally:
            # forget the lock only when no other callback still holds or waits for it
            lock, users = self._verifying[task.id]
            if users == 1:
                del self._verifying[task.id]
            else:
                self._verifying[task.id] = (lock, users - 1)

    async def _apply(self, task: TaskRef, truth: Observation, event: Event, now: float) -> str:
        decision = await self._storage.apply(
            task.id,
            lambda current: with_schedule(
                decide(current, truth, now, copy_results=self._copy_results),
                current,
                self._policy,
                now,
            ),
            event,
        )
        if decision is None:
            raise NotFound("not found")
        if wakes_outbox(decision):
            self._on_final()
        return event.outcome or decision.outcome

    async def _check(self, task: TaskRef, claimed: Observation) -> Verdict:
        polled = await self._poll_once(task.upstream_id or claimed.upstream_id)
        if polled is None:
            return Verdict(None, False, "terminal callback not yet confirmable by poll")
        if not polled.terminal:
            return Verdict(polled, False, "not believed: GrsAI reports the task still running")
        if polled.status != claimed.status or polled.results != claimed.results:
            return Verdict(polled, False, "callback contradicted by poll; stored what GrsAI holds")
        return Verdict(polled, True, "terminal state confirmed by poll")

    async def _poll_once(self, upstream_id: str) -> Observation | None:
        """Ask GrsAI once; None when it cannot confirm right now."""
        try:
            return await self._upstream.poll(upstream_id, within=self._verify_timeout)
        except UpstreamError:
            return None  # the caller defers to the poller

    async def _defer(self, task: TaskRef, event: Event, detail: str, now: float) -> str:
        """Keep the callback, and have the poller confirm the task as soon as possible."""
        deferred = Event(task.id, "callback", now, event.body, outcome="deferred", detail=detail)
        await self._storage.apply(
            task.id,
            lambda current: Decision(
                "deferred", {} if current.terminal else {"next_poll_at": now}, detail
            ),
            deferred,
        )
        return "deferred"

    async def _reject(self, task: TaskRef, raw: bytes, now: float, detail: str) -> None:
        event = Event(task.id, "callback", now, raw, outcome="rejected", detail=detail)
        await self._storage.apply(task.id, lambda _: Decision("rejected", detail=detail), event)


def poll_event(task: Task, obs: Observation, now: float) -> Event:
    """The stored record of a poll answer that changed a task."""
    body = json.dumps(obs.raw, separators=(",", ":"), ensure_ascii=False).encode()
    return Event(task.id, "poll", now, body)
