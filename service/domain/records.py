"""The domain records grsai-relay stores and serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from service.clock import rfc3339

TerminalStatus = Literal["succeeded", "failed"]
TaskStatus = Literal["pending", "running", TerminalStatus]
TERMINAL: frozenset[str] = frozenset(get_args(TerminalStatus))  # final: nothing changes them
TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
SubmitState = Literal["submitting", "submitted", "failed"]
# How GrsAI tells us about a task: POSTs to our webhook, our polls, or the submit's own stream.
TaskMode = Literal["callback", "poll", "stream"]
TASK_MODES: tuple[str, ...] = get_args(TaskMode)
EventOutcome = Literal["applied", "duplicate", "stale", "rejected", "deferred"]
# The body of the client's callbacks: the relay's signed event envelope (final events only), or
# GrsAI's own flat task object (every progress change and the final state), for GrsAI clients.
CallbackFormat = Literal["relay", "grsai"]
CALLBACK_FORMATS: tuple[str, ...] = get_args(CallbackFormat)


def _served(entry: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A result entry as clients see it: our URL absolute, `stored_at` in RFC 3339.

    Entries are stored with `stored_at` in epoch seconds (like every other time in storage).
    """
    url, stored_at = entry.get("url"), entry.get("stored_at")
    absolute = bool(base_url) and isinstance(url, str) and url.startswith("/")
    epoch = isinstance(stored_at, int | float) and not isinstance(stored_at, bool)
    if not (absolute or epoch):
        return entry
    served = dict(entry)
    if absolute:
        served["url"] = base_url + str(url)
    if epoch:
        served["stored_at"] = rfc3339(stored_at)
    return served


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A client credential (only its hash is stored)."""

    id: str
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None = None
    demo: bool = False  # made by demo mode: refused while the relay runs with a real GrsAI key


@dataclass(frozen=True, slots=True)
class TaskRef:
    """The few columns the callback path needs to find and check a task (a narrow, fast read)."""

    id: str
    upstream_id: str | None
    status: TaskStatus

    @property
    def terminal(self) -> bool:
        """True once the task has succeeded or failed for good."""
        return self.status in TERMINAL


@dataclass(slots=True)
class Task:
    """One generation task, as stored."""

    id: str
    api_key_id: str
    model: str
    endpoint: str
    mode: TaskMode
    input: dict[str, Any]
    created_at: float
    updated_at: float
    status: TaskStatus = "pending"
    progress: int = 0
    upstream_id: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    failure_reason: str | None = None
    error: str | None = None
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None
    callback_format: CallbackFormat = "relay"
    completed_at: float | None = None
    submit_state: SubmitState = "submitting"
    idempotency_key: str | None = None
    request_hash: str | None = None
    token_hash: bytes | None = None
    last_event_at: float | None = None
    next_poll_at: float | None = None
    poll_attempts: int = 0
    seq: int | None = None

    @property
    def terminal(self) -> bool:
        """True once the task has succeeded or failed for good."""
        return self.status in TERMINAL

    def to_json(self, base_url: str = "") -> dict[str, Any]:
        """Return the client-facing representation (GET /v1/tasks/{id}).

        Our own result URLs are stored as paths and prefixed with `base_url` here.
        """
        return {
            "id": self.id,
            "status": self.status,
            "progress": self.progress,
            "model": self.model,
            "upstream_id": self.upstream_id,
            "input": self.input,
            "results": [_served(entry, base_url) for entry in self.results],
            "failure_reason": self.failure_reason,
            "error": self.error,
            "metadata": self.metadata,
            "callback_url": self.callback_url,
            "callback_format": self.callback_format,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "completed_at": rfc3339(self.completed_at),
        }


AssetStatus = Literal["pending", "stored", "failed", "pruned"]


@dataclass(slots=True)
class Asset:
    """One result file of a task: the copy job and, once stored, what was stored."""

    task_id: str
    n: int
    upstream_url: str
    status: AssetStatus = "pending"
    attempts: int = 0
    next_attempt_at: float | None = None
    error: str | None = None
    sha256: str | None = None
    content_type: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    stored_at: float | None = None

    @property
    def settled(self) -> bool:
        """True once the copy is stored or failed for good (it may have been the last one)."""
        return self.status in ("stored", "failed")


DeliveryStatus = Literal["pending", "delivered", "dead"]


@dataclass(slots=True)
class Delivery:
    """One event for a client's callback URL (the outbox row); its id is the webhook-id."""

    id: str
    task_id: str
    api_key_id: str
    event_type: str
    url: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float | None
    event_at: float
    delivered_at: float | None = None
    dead_at: float | None = None
    last_error: str | None = None
    progress: int | None = None  # a progress event's value (None for a final event)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at sending a delivery."""

    delivery_id: str
    attempted_at: float
    status_code: int | None
    latency_ms: float | None
    error: str | None


def delivery_json(delivery: Delivery, attempts: list[Attempt] | None = None) -> dict[str, Any]:
    """The client-facing view of a delivery and its attempts."""
    body: dict[str, Any] = {
        "id": delivery.id,
        "event_type": delivery.event_type,
        "url": delivery.url,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": rfc3339(delivery.next_attempt_at)
        if delivery.status == "pending"
        else None,
        "event_at": rfc3339(delivery.event_at),
        "delivered_at": rfc3339(delivery.delivered_at),
        "dead_at": rfc3339(delivery.dead_at),
        "last_error": delivery.last_error,
    }
    if delivery.progress is not None:
        body["progress"] = delivery.progress
    if attempts is not None:
        body["attempt_log"] = [
            {
                "at": rfc3339(a.attempted_at),
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "error": a.error,
            }
            for a in attempts
        ]
    return body
