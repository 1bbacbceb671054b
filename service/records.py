"""The domain records grsai-relay stores and serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from service.clock import rfc3339

TaskStatus = Literal["pending", "running", "succeeded", "failed"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed"})
TASK_STATUSES: tuple[str, ...] = ("pending", "running", "succeeded", "failed")
SubmitState = Literal["submitting", "submitted", "failed"]
EventOutcome = Literal["applied", "duplicate", "stale", "rejected", "deferred"]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A client credential (only its hash is stored)."""

    id: str
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None = None


@dataclass(slots=True)
class Task:
    """One generation task, as stored."""

    id: str
    api_key_id: str
    model: str
    endpoint: str
    mode: Literal["callback", "poll"]
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

    def to_json(self) -> dict[str, Any]:
        """Return the client-facing representation (GET /v1/tasks/{id})."""
        return {
            "id": self.id,
            "status": self.status,
            "progress": self.progress,
            "model": self.model,
            "upstream_id": self.upstream_id,
            "input": self.input,
            "results": self.results,
            "failure_reason": self.failure_reason,
            "error": self.error,
            "metadata": self.metadata,
            "callback_url": self.callback_url,
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
