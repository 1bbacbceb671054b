"""Submitting a client's task to GrsAI, exactly once per Idempotency-Key.

A task row is stored (state `submitting`) before GrsAI is called, so a crash can never leave an
upstream task we know nothing about: in callback mode its first callback carries our token and
recovers it; otherwise the poller fails it as `submit_interrupted` after a grace period.
In stream mode the submit is the opening of the task's stream (`service.jobs.streams`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.clock import Clock
from service.domain.catalog import Catalog
from service.domain.credentials import Entropy, hash_secret, new_callback_token, new_task_id
from service.domain.errors import (
    BadRequest,
    Conflict,
    UpstreamError,
    UpstreamOutcomeUnknown,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
    ValidationFailed,
)
from service.domain.modes import task_mode
from service.domain.records import CALLBACK_FORMATS, ApiKey, Task, TaskMode
from service.domain.schedule import PollPolicy
from service.domain.transitions import Decision, fail_locally
from service.jobs.ratelimit import SubmitLimiter
from service.jobs.schemas import TaskCreate, parse_task_create
from service.jobs.streams import StreamJob, StreamSlot
from service.storage import DuplicateIdempotencyKey, Event, Storage
from service.upstream.grsai import GrsaiClient
from service.upstream.netguard import UrlGuard, UrlRefused

log = logging.getLogger("grsai_relay.submission")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
SUBMIT_REJECTED = "submit_rejected"


@dataclass(frozen=True, slots=True)
class Accepted:
    """A submission's outcome: the task, and whether this answer replays an earlier one."""

    task: Task
    replayed: bool = False


def request_fingerprint(body: dict[str, Any]) -> str:
    """A stable hash of a submission body (key order and spacing do not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Submitter:
    """Validates, records and submits tasks."""

    def __init__(
        self,
        storage: Storage,
        upstream: GrsaiClient,
        catalog: Catalog,
        policy: PollPolicy,
        clock: Clock,
        entropy: Entropy,
        *,
        public_url: Callable[[], str | None],
        metadata_limit: int,
        callback_guard: UrlGuard | None = None,
        limiter: SubmitLimiter | None = None,
        task_mode: str = "auto",
        streams: StreamJob | None = None,
    ) -> None:
        self._storage = storage
        self._upstream = upstream
        self._catalog = catalog
        self._policy = policy
        self._clock = clock
        self._entropy = entropy
        self._public_url = public_url  # read per task: a tunnel may move or drop it
        self._metadata_limit = metadata_limit
        self._callback_guard = callback_guard
        self._limiter = limiter
        self._task_mode = task_mode
        self._streams = streams

    def _validate(self, body: dict[str, Any]) -> tuple[TaskCreate, str]:
        request = parse_task_create(body, self._metadata_limit)
        model = self._catalog.model(request.model)
        if model is None:
            known = self._catalog.models
            raise ValidationFailed(
                f"unknown model {request.model[:100]!r}; known models: {', '.join(known)}",
                fields=[{"field": "model", "message": "unknown model"}],
                known_models=known,
            )
        params, endpoint = request.upstream_params(), model.endpoint
        unsupported = sorted(set(params) - endpoint.params)
        if unsupported:
            raise ValidationFailed(
                f"{request.model} does not take {', '.join(unsupported)}",
                fields=[
                    {"field": f, "message": f"not a parameter of {endpoint.path}"}
                    for f in unsupported
                ],
            )
        wrong = model.problems(params)
        if wrong:
            summary = "; ".join(
                f"{f['field']} {params[f['field']]!r}: {f['message']}" for f in wrong
            )
            raise ValidationFailed(f"{request.model}: {summary}", fields=wrong)
        return request, endpoint.path

    async def submit(
        self,
        key: ApiKey,
        body: dict[str, Any],
        idempotency_key: str | None,
        *,
        callback_format: str = "relay",
    ) -> Accepted:
        """Create and submit a task, or replay the one this Idempotency-Key already made.

        `callback_format` is the body of the callbacks to the task's `callback_url` unless the
        body names one itself: "relay" (the relay's signed event) or "grsai" (GrsAI's own task
        object, for clients of the GrsAI-shaped API). GrsAI always calls the relay's own URL.
        """
        if callback_format not in CALLBACK_FORMATS:
            raise ValidationFailed(
                f"callback_format must be one of {', '.join(CALLBACK_FORMATS)}",
                fields=[{"field": "callback_format", "message": "unknown callback format"}],
            )
        if callback_format != "relay" and "callback_format" not in body:
            body = {**body, "callback_format": callback_format}  # part of the request's hash
        request, path = self._validate(body)
        public_url = self._public_url()  # once: a tunnel may move it meanwhile
        mode = task_mode(request.mode, self._task_mode, public_url)
        if request.callback_url is not None and self._callback_guard is not None:
            try:
                await self._callback_guard.vet(request.callback_url)
            except UrlRefused as exc:
                raise ValidationFailed(
                    f"callback_url is refused: {exc}",
                    fields=[{"field": "callback_url", "message": str(exc)}],
                ) from exc
        fingerprint = request_fingerprint(body)
        if idempotency_key is not None:
            if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
                raise BadRequest(
                    "Idempotency-Key must be 1-255 printable ASCII characters",
                    code="invalid_idempotency_key",
                )
            existing = await self._storage.task_by_idempotency_key(key.id, idempotency_key)
            if existing is not None:
                return self._replay(existing, fingerprint)
        slot = self._streams.reserve() if mode == "stream" and self._streams else None
        if mode == "stream" and slot is None:
            mode = "poll"
            log.warning(
                "all STREAM_MAX GrsAI streams are open; submitting a task in poll mode instead",
                extra={"event": "stream_slots_full"},
            )
        try:
            where = (path, fingerprint, idempotency_key)
            return await self._create(key, request, where, slot, (mode, public_url))
        finally:
            if slot is not None:
                slot.release()  # a no-op once its stream took it

    async def _create(
        self,
        key: ApiKey,
        request: TaskCreate,
        where: tuple[str, str, str | None],
        slot: StreamSlot | None,
        how: tuple[TaskMode, str | None],
    ) -> Accepted:
        path, fingerprint, idempotency_key = where
        mode, public_url = how
        now = self._clock.now()
        token = new_callback_token(self._entropy) if mode == "callback" else None
        task = Task(
            id=new_task_id(self._entropy),
            api_key_id=key.id,
            model=request.model,
            endpoint=path,
            mode=mode,
            input={"model": request.model, "prompt": request.prompt, **request.upstream_params()},
            created_at=now,
            updated_at=now,
            metadata=request.metadata,
            callback_url=request.callback_url,
            callback_format=request.callback_format or "relay",
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            token_hash=hash_secret(token) if token else None,
            next_poll_at=now + self._policy.submit_recovery_grace,
        )
        try:
            await self._storage.insert_task(task)
        except DuplicateIdempotencyKey:
            assert idempotency_key is not None
            existing = await self._storage.task_by_idempotency_key(key.id, idempotency_key)
            if existing is None:  # pragma: no cover - the row that conflicted cannot vanish
                raise Conflict(
                    "a request with this Idempotency-Key is in flight", code="idempotency_in_flight"
                ) from None
            return self._replay(existing, fingerprint)
        web_hook = f"{public_url}/webhooks/grsai/{token}" if token else "-1"
        try:
            async with self._slot():
                if slot is not None and self._streams is not None:
                    # shutProgress off: the progress frames are the live status (and the
                    # first one names the task at once instead of at the end)
                    body = {**task.input, "shutProgress": False}
                    upstream_id = await self._streams.submit(slot, task, path, body)
                else:
                    body = {**task.input, "webHook": web_hook}
                    upstream_id = await self._upstream.submit(path, body)
        except UpstreamError as exc:
            await self._record_failure(task, exc)
            exc.details["task_id"] = task.id
            raise
        return Accepted(await self._record_success(task, upstream_id))

    def _slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._limiter.upstream_slot() if self._limiter else contextlib.nullcontext()

    def _replay(self, existing: Task, fingerprint: str) -> Accepted:
        if existing.request_hash != fingerprint:
            raise ValidationFailed(
                "this Idempotency-Key was used with a different request body",
                code="idempotency_key_reused",
                fields=[{"field": "Idempotency-Key", "message": "reused with another body"}],
            )
        in_flight = existing.submit_state == "submitting" and existing.upstream_id is None
        if in_flight and not existing.terminal:
            raise Conflict(
                "a request with this Idempotency-Key is still in flight",
                code="idempotency_in_flight",
                task_id=existing.id,
            )
        if existing.failure_reason == SUBMIT_REJECTED:
            refusal = UpstreamRejected(
                existing.error or "GrsAI rejected the task", task_id=existing.id
            )
            refusal.replayed = True
            raise refusal
        return Accepted(existing, replayed=True)

    async def _record_failure(self, task: Task, exc: UpstreamError) -> None:
        now = self._clock.now()
        ambiguous = isinstance(exc, UpstreamOutcomeUnknown | UpstreamProtocolError)
        if ambiguous and task.mode == "callback":
            # GrsAI may hold the task: its first callback (our token) recovers it,
            # otherwise the poller fails it as submit_interrupted after the grace period.
            return
        if isinstance(exc, UpstreamUnavailable):
            reason = "upstream_unavailable"
        elif isinstance(exc, UpstreamRejected):
            reason = SUBMIT_REJECTED
        else:
            reason = "submit_outcome_unknown"
        error = exc.message
        release = isinstance(exc, UpstreamUnavailable)  # surely not submitted: a retry may

        def fail(current: Task) -> Decision:
            decision = fail_locally(current, reason, error, now)
            if decision.outcome != "applied":
                return decision
            changes = {**decision.changes, "idempotency_key": None} if release else None
            # The client hears of this failure in the answer to its submit, not by callback.
            return dataclasses.replace(
                decision, changes=changes or decision.changes, final_event=None
            )

        event = Event(task.id, "submit", now, error.encode(), detail=reason)
        await self._storage.apply(task.id, fail, event)

    async def _record_success(self, task: Task, upstream_id: str) -> Task:
        now = self._clock.now()
        first_poll = self._policy.after_submit(task, now)

        def bind(current: Task) -> Decision:
            changes: dict[str, Any] = {"submit_state": "submitted", "upstream_id": upstream_id}
            if current.status == "pending":
                changes |= {"next_poll_at": first_poll, "updated_at": now}
            return Decision("applied", changes)

        await self._storage.apply(task.id, bind, None)
        stored = await self._storage.task(task.id)  # with whatever a callback changed meanwhile
        assert stored is not None
        return stored
