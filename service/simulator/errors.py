"""Errors the simulated API answers with before (or instead of) a task.

Every one becomes the plain GrsAI error body `{"code": C, "msg": M, "data": null}`::

    SimulatorError          code -1, HTTP 200 (GrsAI's usual "soft" error)
    ├── BadRequest          invalid JSON, wrong model, missing prompt, bad directive
    ├── Unauthorized        HTTP 401, missing or wrong Bearer key
    ├── InjectedHTTPError   any HTTP status asked for by `[sim:http=N]`
    └── TaskNotFound        code -22, unknown id or inside the poll-miss window
"""

from __future__ import annotations

from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class SimulatorError(Exception):
    """An error answered as GrsAI's plain JSON error body."""

    code: int = -1
    http_status: int = 200

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg

    def headers(self) -> dict[str, str]:
        """Extra response headers."""
        return {}

    def response(self) -> Response:
        """GrsAI's plain error body with this error's HTTP status."""
        return JSONResponse(
            {"code": self.code, "msg": self.msg, "data": None},
            status_code=self.http_status,
            headers=self.headers(),
        )


class BadRequest(SimulatorError):
    """The submit body cannot be accepted."""


class Unauthorized(SimulatorError):
    """Missing or wrong API key."""

    http_status = 401

    def __init__(self) -> None:
        super().__init__("unauthorized")


class InjectedHTTPError(SimulatorError):
    """An HTTP error status requested by a fault directive."""

    def __init__(self, status: int) -> None:
        super().__init__(HTTPStatus(status).phrase.lower())
        self.http_status = status

    def headers(self) -> dict[str, str]:
        """Ask the caller to back off briefly on a simulated rate limit."""
        return {"Retry-After": "1"} if self.http_status == 429 else {}


class TaskNotFound(SimulatorError):
    """The task id is unknown (or not yet visible)."""

    code = -22

    def __init__(self) -> None:
        super().__init__("task not found")


async def handle_simulator_error(request: Request, exc: Exception) -> Response:
    """Render any `SimulatorError` as GrsAI's plain error body."""
    assert isinstance(exc, SimulatorError)
    return exc.response()


async def handle_client_gone(request: Request, exc: Exception) -> Response:
    """The caller hung up while sending its request (a relay killed mid-submit): nobody is left
    to answer, so the empty response is never read; no server error is logged for it."""
    return Response(status_code=499)
