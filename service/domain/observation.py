"""What GrsAI told us about a task, read from any of the shapes seen in the wild.

The same flat task object arrives as a callback body, a stream line and the `data` of a poll
answer. `parse_task_object` accepts every documented variant (results list or top-level `url`,
`fail_reason` alias, `violation` status, extra fields) and refuses anything else with an
`InvalidTaskObject` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from service.domain.errors import InvalidTaskObject

UpstreamStatus = Literal["running", "succeeded", "failed"]
MAX_UPSTREAM_ID = 128
MAX_URL = 4096
MAX_TEXT = 4000
MAX_RESULTS = 64


@dataclass(frozen=True, slots=True)
class ResultFile:
    """One result file as GrsAI reports it."""

    url: str
    width: int | None = None
    height: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the client-facing shape."""
        return {"url": self.url, "width": self.width, "height": self.height}


@dataclass(frozen=True, slots=True)
class Observation:
    """A normalised reading of a GrsAI task object."""

    upstream_id: str
    status: UpstreamStatus
    progress: int | None
    results: tuple[ResultFile, ...] = ()
    failure_reason: str | None = None
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def terminal(self) -> bool:
        """True when GrsAI says the task is finished."""
        return self.status != "running"


def _bad(field_name: str, message: str) -> InvalidTaskObject:
    return InvalidTaskObject(
        f"{field_name}: {message}", fields=[{"field": field_name, "message": message}]
    )


def _text(obj: dict[str, Any], name: str, limit: int = MAX_TEXT) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(name, "must be a string")
    return value[:limit]


def _dimension(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(name, "must be a number")
    if not 0 <= value <= 1_000_000:
        raise _bad(name, "must be between 0 and 1000000")
    return int(value) or None


def _url(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(name, "must be a non-empty string")
    if len(value) > MAX_URL:
        raise _bad(name, f"longer than {MAX_URL} characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _bad(name, "must be an absolute http(s) URL")
    return value


def _status(obj: dict[str, Any]) -> tuple[UpstreamStatus, str | None]:
    value = obj.get("status")
    if not isinstance(value, str):
        raise _bad("status", "must be a string")
    status = value.strip().lower()
    if status in ("running", "succeeded", "failed"):
        return status, None  # type: ignore[return-value]  # narrowed by the membership test
    if status == "violation":
        return "failed", "violation"
    raise _bad("status", f"unknown status {value[:40]!r}")


def _progress(obj: dict[str, Any]) -> int | None:
    value = obj.get("progress")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad("progress", "must be a number")
    if not 0 <= value <= 100:
        raise _bad("progress", "must be between 0 and 100")
    return int(value)


def _results(obj: dict[str, Any]) -> tuple[ResultFile, ...]:
    items = obj.get("results")
    found: list[ResultFile] = []
    if items is not None:
        if not isinstance(items, list):
            raise _bad("results", "must be a list or null")
        if len(items) > MAX_RESULTS:
            raise _bad("results", f"more than {MAX_RESULTS} items")
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                raise _bad(f"results[{n}]", "must be an object")
            if item.get("url") in (None, ""):
                continue
            found.append(
                ResultFile(
                    _url(item["url"], f"results[{n}].url"),
                    _dimension(item, "width"),
                    _dimension(item, "height"),
                )
            )
    if not found and obj.get("url") not in (None, ""):
        found.append(
            ResultFile(_url(obj["url"], "url"), _dimension(obj, "width"), _dimension(obj, "height"))
        )
    return tuple(found)


def parse_task_object(obj: Any) -> Observation:
    """Read a flat GrsAI task object; raise `InvalidTaskObject` naming the first wrong field."""
    if not isinstance(obj, dict):
        raise InvalidTaskObject("task object must be a JSON object")
    upstream_id = obj.get("id")
    if not isinstance(upstream_id, str) or not upstream_id or len(upstream_id) > MAX_UPSTREAM_ID:
        raise _bad("id", f"must be a string of 1 to {MAX_UPSTREAM_ID} characters")
    status, implied_reason = _status(obj)
    progress = _progress(obj)
    results = _results(obj)
    reason = _text(obj, "failure_reason", 200) or _text(obj, "fail_reason", 200) or implied_reason
    error = _text(obj, "error")
    if status == "succeeded":
        if not results:
            raise _bad("results", "a succeeded task must carry at least one result URL")
        progress = 100
    if status == "failed":
        reason = reason or "error"
    return Observation(upstream_id, status, progress, results, reason, error, raw=obj)


def unwrap_poll_answer(body: Any) -> tuple[int, str, Any]:
    """Split a `/v1/draw/result` answer into (code, msg, task object or None).

    The answer is usually wrapped `{"code", "msg", "data"}`; one copy of the docs shows it bare.
    """
    if not isinstance(body, dict):
        raise InvalidTaskObject("poll answer is not a JSON object")
    if "code" in body and ("data" in body or "msg" in body):
        code = body.get("code")
        if isinstance(code, bool) or not isinstance(code, int):
            raise InvalidTaskObject("poll answer code is not an integer")
        msg = body.get("msg")
        return code, msg if isinstance(msg, str) else "", body.get("data")
    return 0, "", body
