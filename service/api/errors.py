"""The one table mapping errors to JSON error responses: `{"error": {"code", "message", ...}}`.

Errors of the domain tree (`service.domain.errors`) answer with their own status and code; the
framework's own refusals (routing) with theirs; anything else is a 500 that says nothing more.
On GrsAI's own paths (`/v1/draw/*`, `/v1/video/*`) every one of them is rendered in GrsAI's
shape instead (`service.api.grsai_errors`), so those paths never answer the relay's own.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from service.api.grsai_errors import grsai_error, grsai_path
from service.domain.errors import RelayError

# The framework's own refusals (routing) by status; any other status it raises is `http_error`.
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}
HTTP_ERROR = "http_error"
REPLAYED = {"Idempotent-Replayed": "true"}  # Stripe's mark of an answer given again


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    """Build the one JSON error shape: {"error": {"code", "message", ...details}}."""
    return {"error": {"code": code, "message": message, **details}}


def error_response(exc: RelayError) -> JSONResponse:
    """Render a domain error as its JSON response."""
    headers = {"Retry-After": "1"} if exc.status == 503 else {}
    if "retry_after" in exc.details:
        headers = {"Retry-After": str(exc.details["retry_after"])}
    if exc.replayed:
        headers |= REPLAYED
    return JSONResponse(
        error_body(exc.code, exc.message, **exc.details),
        status_code=exc.status,
        headers=headers,
    )


async def _relay_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RelayError)
    if grsai_path(request.url.path):
        return grsai_error(exc)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if grsai_path(request.url.path):
        return grsai_error(exc)
    code = HTTP_ERROR_CODES.get(exc.status_code, HTTP_ERROR)
    message = "not found" if exc.status_code == 404 else str(exc.detail)  # one 404 body everywhere
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if grsai_path(request.url.path):
        return grsai_error(exc)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def exception_handlers() -> dict[Any, Any]:
    """The one table mapping exceptions to JSON responses."""
    return {RelayError: _relay_error, HTTPException: _http_error, Exception: _unexpected}
