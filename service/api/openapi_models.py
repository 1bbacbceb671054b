"""The response models of the client API, mirroring what each route returns (for OpenAPI)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

RESULT_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "video/mp4",
                "video/quicktime")  # fmt: skip


class FieldError(BaseModel):
    """One wrong field of a request."""

    field: str = Field(description="Dotted path of the field (`body` for the whole body).")
    message: str
    allowed: list[str | int] | None = Field(
        default=None,
        description="A value the model does not take: the values it does (empty: it takes no "
        "value for this field at all).",
    )
    pattern: str | None = Field(
        default=None, description="Where the model also takes any value of a form: its regex."
    )


class ErrorDetail(BaseModel):
    """What went wrong; some answers add keys (those below, and possibly others)."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$", examples=["validation_failed"])
    message: str
    fields: list[FieldError] = Field(default_factory=list, description="Validation errors only.")
    known_models: list[str] = Field(default_factory=list, description="Unknown model only.")
    task_id: str | None = Field(default=None, description="The task a failed submit stored.")
    limit: int | None = Field(
        default=None,
        description="The body limit, in bytes (413); the open event streams a key may hold "
        "(429 `too_many_streams`).",
    )
    reason: str | None = Field(default=None, description="Why a result copy failed.")
    retry_after: int | None = Field(default=None, description="Seconds to wait (429).")


class ErrorBody(BaseModel):
    """Every error answer: `{"error": {"code", "message", ...}}`."""

    error: ErrorDetail


class AssetState(BaseModel):
    """Where the copy of one result file stands."""

    status: Literal["pending", "stored", "failed", "pruned", "not_copied"]
    error: str | None = Field(description="Why the last copy attempt failed.")
    attempts: int = Field(default=0, ge=0, description="Absent until the first attempt.")


class ResultEntry(BaseModel):
    """One result file: our copy (`url`, null until stored) and GrsAI's (`upstream_url`)."""

    url: str | None
    upstream_url: str = Field(description="GrsAI's URL, valid for about two hours.")
    content_type: str | None
    bytes: int | None = Field(ge=0)
    sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")
    width: int | None
    height: int | None
    stored_at: AwareDatetime | None = Field(description="When our copy was stored (RFC 3339).")
    asset: AssetState


class Task(BaseModel):
    """A task as `GET /v1/tasks/{task_id}` returns it (`records.Task.to_json`)."""

    id: str = Field(examples=["task_3kq9V1c0Zb2uYw8Rr4nT5g"])
    status: Literal["pending", "running", "succeeded", "failed"]
    progress: int = Field(ge=0, le=100)
    model: str
    upstream_id: str | None
    input: dict[str, Any] = Field(description="What was sent to GrsAI (without `webHook`).")
    results: list[ResultEntry]
    failure_reason: str | None = Field(
        description="GrsAI's (`output_moderation`, `input_moderation`, `error`, `violation`) or "
        "ours (`submit_rejected`, `upstream_unavailable`, `submit_outcome_unknown`, "
        "`submit_interrupted`, `lost`, `timeout`)."
    )
    error: str | None
    metadata: dict[str, Any] | None
    callback_url: str | None
    callback_format: Literal["relay", "grsai"] = Field(
        description="The body of the callbacks to `callback_url`: the relay's signed event "
        "(final events), or GrsAI's own flat task object (every progress change and the end)."
    )
    created_at: AwareDatetime
    updated_at: AwareDatetime
    completed_at: AwareDatetime | None


class TaskPage(BaseModel):
    """One page of tasks, newest first."""

    data: list[Task]
    next_cursor: str | None = Field(
        description="Pass as `cursor` (alone) for the next page of the same list; null at the end."
    )


class Attempt(BaseModel):
    """One try at sending a delivery."""

    at: AwareDatetime
    status_code: int | None
    latency_ms: float | None
    error: str | None


class Delivery(BaseModel):
    """One event for the task's `callback_url`; its id is the `webhook-id`."""

    id: str
    event_type: str = Field(
        description="`task.succeeded` or `task.failed`: the final event (once the result files "
        "are stored). `task.progress`: one per progress value, only with `callback_format` "
        "`grsai` (a progress event whose task is final before it is sent is `dead`, never sent)."
    )
    url: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int = Field(ge=0)
    next_attempt_at: AwareDatetime | None
    event_at: AwareDatetime
    delivered_at: AwareDatetime | None
    dead_at: AwareDatetime | None
    last_error: str | None
    progress: int | None = Field(
        default=None, ge=0, le=100, description="The value a `task.progress` event reports."
    )
    attempt_log: list[Attempt] = Field(
        default_factory=list, description="Every attempt (in the delivery list only)."
    )


class DeliveryList(BaseModel):
    """Every delivery of one task."""

    data: list[Delivery]


class Replayed(BaseModel):
    """How many dead deliveries were queued again."""

    requeued: int = Field(ge=0)


class Health(BaseModel):
    """The process serves."""

    status: Literal["ok"]


class Check(BaseModel):
    """One dependency's state."""

    status: Literal["ok", "warning", "failing"] = Field(
        description="`warning` is reported but leaves the relay ready"
    )
    error: str | None = None
    detail: str | None = None
    mode: Literal["callback", "poll", "stream"] | None = Field(
        default=None, description="settings: the mode of tasks that do not ask for one"
    )
    in_use: str | None = Field(default=None, description="An HTTP client's busy/all connections")


class Readiness(BaseModel):
    """Each check by name: database, settings, poller, copier, deliverer, the outbound HTTP
    clients (`http_grsai`, `http_downloads`, `http_deliveries`), and grsai when asked."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]


class WebhookAck(BaseModel):
    """The answer GrsAI expects once a callback is stored."""

    code: Literal[0]
    msg: Literal["success"]


MODELS: tuple[type[BaseModel], ...] = (
    ErrorBody, Task, TaskPage, Delivery, DeliveryList, Replayed, Health, Readiness, WebhookAck
)  # fmt: skip
