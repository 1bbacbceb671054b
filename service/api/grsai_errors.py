"""Errors on the GrsAI-compatible paths, in GrsAI's own shape: `{"code", "msg", "data": null}`.

A client written for GrsAI reads `code` and `msg` (and sometimes only the HTTP status), never
the relay's `{"error": {...}}`; every refusal on `/v1/draw/*` and `/v1/video/*` is rendered
here, whether a route raised it or the router did (404, 405), so the two shapes never mix.

    unknown task on /v1/draw/result    HTTP 200, code -22 "task not found" (as GrsAI)
    GrsAI refused the task (code != 0) HTTP 200, code -1 and GrsAI's message (as GrsAI)
    GrsAI answered 429                 HTTP 429 (the client backs off as it would)
    any other relay error              its own HTTP status (401, 4xx, 502, 503), code -1
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from service.domain.errors import RelayError, UpstreamRejected
from service.domain.grsai_shape import NOT_FOUND_CODE, envelope

GRSAI_PREFIXES = ("/v1/draw/", "/v1/video/")
FAILED_CODE = -1  # GrsAI's usual code for a refusal ("insufficient credits", bad model, ...)
_HTTP_MESSAGES = {404: "not found", 405: "method not allowed"}


def grsai_path(path: str) -> bool:
    """Whether `path` is one of GrsAI's paths, answered in GrsAI's shapes."""
    return path.startswith(GRSAI_PREFIXES)


def grsai_answer(
    code: int, msg: str, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    """GrsAI's error body with `status`."""
    return JSONResponse(envelope(None, code, msg), status_code=status, headers=headers)


def task_not_found() -> JSONResponse:
    """`/v1/draw/result` for an id this key does not own: GrsAI's -22 (HTTP 200)."""
    return grsai_answer(NOT_FOUND_CODE, "task not found")


def _status(exc: RelayError) -> int:
    if isinstance(exc, UpstreamRejected):
        if exc.http_status is None:  # GrsAI answered 200 with a non-zero code
            return 200
        if exc.http_status == 429:
            return 429
        return 502  # e.g. 401: the relay's GrsAI key is at fault, not the client's
    return exc.status


def grsai_error(exc: Exception) -> JSONResponse:
    """Any exception raised on a GrsAI path, as GrsAI's error body and status."""
    if isinstance(exc, RelayError):
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else {}
        if "retry_after" in exc.details:
            headers = {"Retry-After": str(exc.details["retry_after"])}
        if exc.replayed:
            headers["Idempotent-Replayed"] = "true"
        return grsai_answer(FAILED_CODE, exc.message, _status(exc), headers)
    if isinstance(exc, HTTPException):
        message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
        return grsai_answer(FAILED_CODE, message, exc.status_code, dict(exc.headers or {}))
    return grsai_answer(FAILED_CODE, "internal server error", 500)
