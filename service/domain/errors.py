"""The one tree of domain errors, and the table that maps it to JSON error responses.

RelayError                      -> 500 internal_error (never raised on purpose)
├── ClientError                 -> 4xx, carries `status` and `code`
│   ├── BadRequest              -> 400 bad_request / invalid_json / invalid_payload
│   ├── Unauthorized            -> 401 unauthorized
│   ├── NotFound                -> 404 not_found
│   ├── RequestTimeout          -> 408 request_timeout (body too slow)
│   ├── Conflict                -> 409 idempotency_in_flight
│   ├── PayloadTooLarge         -> 413 payload_too_large
│   ├── UnsupportedMediaType    -> 415 unsupported_media_type
│   └── ValidationFailed        -> 422 validation_failed (+ `fields`)
└── UpstreamError               -> GrsAI misbehaved or is unreachable
    ├── UpstreamRejected        -> 502 upstream_rejected (code != 0, 401, 429, ...)
    ├── UpstreamUnavailable     -> 503 upstream_unavailable (surely not submitted)
    ├── UpstreamOutcomeUnknown  -> 503 upstream_outcome_unknown (sent; GrsAI answered 5xx)
    │   └── UpstreamTimeout     -> 503 upstream_timeout (sent, no answer in time)
    └── UpstreamProtocolError   -> 502 upstream_protocol_error (answer we cannot read)
StorageUnavailable              -> 503 storage_unavailable (database busy, locked, read-only)
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class RelayError(Exception):
    """Base of every error grsai-relay raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}  # extra response headers (e.g. Idempotent-Replayed)


class ClientError(RelayError):
    """The request is at fault."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        if code is not None:
            self.code = code


class BadRequest(ClientError):
    """Malformed input."""


class Unauthorized(ClientError):
    """Missing or unknown credentials."""

    status = 401
    code = "unauthorized"


class NotFound(ClientError):
    """No such resource for this caller."""

    status = 404
    code = "not_found"


class Conflict(ClientError):
    """The same request is still being processed."""

    status = 409
    code = "conflict"


class RequestTimeout(ClientError):
    """The client did not send its body in time."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(ClientError):
    """The body exceeds the configured limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ClientError):
    """The body is not in a format this endpoint reads."""

    status = 415
    code = "unsupported_media_type"


class ValidationFailed(ClientError):
    """The body parsed but its fields are wrong; `fields` lists each problem."""

    status = 422
    code = "validation_failed"


class UpstreamError(RelayError):
    """GrsAI did not do what we asked."""

    status = 502
    code = "upstream_error"

    def __init__(self, message: str, *, http_status: int | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.http_status = http_status


class UpstreamRejected(UpstreamError):
    """GrsAI answered and refused (code != 0, 401, 429, insufficient credits, ...)."""

    code = "upstream_rejected"


class UpstreamUnavailable(UpstreamError):
    """GrsAI could not be reached; the request surely did not arrive."""

    status = 503
    code = "upstream_unavailable"


class UpstreamOutcomeUnknown(UpstreamError):
    """The request reached GrsAI (or a gateway in front of it) and may or may not have worked."""

    status = 503
    code = "upstream_outcome_unknown"


class UpstreamTimeout(UpstreamOutcomeUnknown):
    """The request was sent but no answer came in time: the outcome is unknown."""

    code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    """GrsAI answered something we cannot read (HTML, truncated JSON, wrong shape)."""

    code = "upstream_protocol_error"


class StorageUnavailable(RelayError):
    """The database cannot take the write or read right now; try again later."""

    status = 503
    code = "storage_unavailable"


# The framework's own refusals (routing) by status; any other status it raises is `http_error`.
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}
HTTP_ERROR = "http_error"


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    """Build the one JSON error shape: {"error": {"code", "message", ...details}}."""
    return {"error": {"code": code, "message": message, **details}}


def error_response(exc: RelayError) -> JSONResponse:
    """Render a domain error as its JSON response."""
    headers = {"Retry-After": "1"} if exc.status == 503 else {}
    if "retry_after" in exc.details:
        headers = {"Retry-After": str(exc.details["retry_after"])}
    return JSONResponse(
        error_body(exc.code, exc.message, **exc.details),
        status_code=exc.status,
        headers={**headers, **exc.headers},
    )


async def _relay_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RelayError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    code = HTTP_ERROR_CODES.get(exc.status_code, HTTP_ERROR)
    message = "not found" if exc.status_code == 404 else str(exc.detail)  # one 404 body everywhere
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def exception_handlers() -> dict[Any, Any]:
    """The one table mapping exceptions to JSON responses."""
    from starlette.exceptions import HTTPException

    return {RelayError: _relay_error, HTTPException: _http_error, Exception: _unexpected}
