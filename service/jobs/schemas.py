"""Request bodies of the client API, validated by pydantic (strict: no silent coercion)."""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.domain.errors import ValidationFailed

OWN_FIELDS = frozenset({"model", "prompt", "callback_url", "callback_format", "metadata", "mode"})
_Url = Field(default=None, min_length=1, max_length=4096)


class TaskCreate(BaseModel):
    """POST /v1/tasks: the model, the prompt, GrsAI's parameters, and our own options."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=100)
    prompt: str = Field(min_length=1, max_length=32_000)
    callback_url: str | None = Field(default=None, max_length=2048)
    callback_format: Literal["relay", "grsai"] | None = Field(
        default=None,
        description="The body of the callbacks to callback_url: relay (default: the relay's "
        "signed event, once the task is final) or grsai (GrsAI's own flat task object, on every "
        "progress change and at the end, as GrsAI's webHook posts it; signed the same way).",
    )
    metadata: dict[str, Any] | None = None
    mode: Literal["callback", "poll", "stream"] | None = Field(
        default=None,
        description="How GrsAI reports on this task (default: the relay's TASK_MODE): callback "
        "(needs the relay's PUBLIC_BASE_URL), poll, or stream (GrsAI's streamed answer).",
    )

    urls: list[str] | None = Field(default=None, max_length=16)
    url: str | None = _Url
    firstFrameUrl: str | None = _Url  # GrsAI spells its fields in camelCase
    lastFrameUrl: str | None = _Url
    aspectRatio: str | None = Field(default=None, min_length=1, max_length=32)
    imageSize: str | None = Field(default=None, min_length=1, max_length=16)
    size: str | None = Field(default=None, min_length=1, max_length=32)
    # Values are checked per model by the catalog (service/domain/catalog_values.py); the
    # bounds here only keep absurd numbers out, so MODEL_CATALOG can extend the lists.
    variants: int | None = Field(default=None, ge=1, le=16)
    quality: str | None = Field(default=None, min_length=1, max_length=32)
    background: str | None = Field(default=None, min_length=1, max_length=32)
    duration: int | None = Field(default=None, ge=1, le=60)
    remixTargetId: str | None = Field(default=None, min_length=1, max_length=128)
    characters: list[Any] | None = Field(default=None, max_length=8)
    shutProgress: bool | None = None

    @field_validator("variants", "duration", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        """JSON has one number type: 2.0 is the integer 2 (strings and 2.5 stay refused)."""
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials")
        try:
            parts.port  # noqa: B018  # urlsplit checks the port only when it is read
        except ValueError as exc:
            raise ValueError("has an invalid port") from exc
        return value

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    def upstream_params(self) -> dict[str, Any]:
        """The GrsAI parameters the client set (everything but our own fields)."""
        return self.model_dump(exclude=set(OWN_FIELDS), exclude_none=True)


def _field_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def parse_task_create(body: dict[str, Any], metadata_limit: int) -> TaskCreate:
    """Validate a submission body; raise `ValidationFailed` listing every wrong field."""
    if "webHook" in body:
        raise ValidationFailed(
            "webHook is set by grsai-relay; use callback_url to be notified",
            fields=[{"field": "webHook", "message": "not allowed"}],
        )
    try:
        task = TaskCreate.model_validate(body)
    except ValidationError as exc:
        fields = [{"field": _field_name(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
        raise ValidationFailed(f"invalid task: {summary}", fields=fields) from exc
    if task.callback_format is not None and task.callback_url is None:
        raise ValidationFailed(
            "callback_format needs a callback_url to send the callbacks to",
            fields=[{"field": "callback_format", "message": "set without callback_url"}],
        )
    if task.metadata is not None:
        size = len(json.dumps(task.metadata, separators=(",", ":")).encode())
        if size > metadata_limit:
            raise ValidationFailed(
                f"metadata is {size} bytes; the limit is {metadata_limit}",
                fields=[{"field": "metadata", "message": f"larger than {metadata_limit} bytes"}],
            )
    return task
