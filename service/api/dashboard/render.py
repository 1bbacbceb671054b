"""Rendering the dashboard: the Jinja2 templates (autoescaped: whatever a user typed shows as
text), the security headers on every answer, and errors as HTML pages with their 4xx status."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.context import services
from service.api.dashboard.session import SECURITY_HEADERS, end_session
from service.domain.errors import RelayError

HERE = Path(__file__).parent
Handler = Callable[[Request], Awaitable[Response]]


def _when(epoch: float | None) -> str:
    """Epoch seconds as a UTC time a person reads."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Templates:
    """The dashboard's templates (one environment per app, built by `dashboard.routes`)."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every template is HTML: user text is always escaped
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when

    def page(self, name: str, http_status: int = 200, **context: Any) -> HTMLResponse:
        """Render template `name` as a complete, uncached HTML answer."""
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=http_status, headers={"cache-control": "no-store"})

    def error(self, request: Request, exc: RelayError) -> HTMLResponse:
        """An error as an HTML page with its status (a 401 also clears the cookie)."""
        status = exc.status if 400 <= exc.status < 600 else 500
        message = exc.message if status < 500 else "the relay could not answer; try again"
        response = self.page(
            "error.html", status, status=status, error_code=exc.code, message=message,
            signed_out=status == 401,
        )  # fmt: skip
        if exc.status == 401 and "cookie" in request.headers:
            end_session(services(request), response)
        if "retry_after" in exc.details:
            response.headers["retry-after"] = str(exc.details["retry_after"])
        return response


class Hardened:
    """Adds the dashboard's security headers to every answer of an ASGI app (static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add each header the answer does not set itself."""

        async def hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [
                    (name.encode(), value.encode())
                    for name, value in SECURITY_HEADERS.items()
                    if name.encode() not in present
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, hardened)


class Endpoint:
    """An ASGI endpoint running `handler`; a `RelayError` becomes an HTML error page. (A class,
    not a function: Starlette would take a function for a request-response handler.)"""

    def __init__(self, templates: Templates, handler: Handler) -> None:
        self.templates = templates
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the handler; answer with its response, or its error as a page."""
        request = Request(scope, receive)
        try:
            response = await self.handler(request)
        except RelayError as exc:
            response = self.templates.error(request, exc)
        await Hardened(response)(scope, receive, send)
