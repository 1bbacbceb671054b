"""Broken answers at the HTTP level: what a proxy, a crash or an overload in front of GrsAI sends.

Each kind, as the client sees it::

    html        HTTP 502 with an nginx-style HTML error page
    truncated   HTTP 200 whose JSON body stops halfway (the HTTP message itself is complete)
    close       the status line and headers go out, then the app aborts and the server closes
                the connection before any body byte: the client never gets an answer (httpx:
                `RemoteProtocolError`)
    500         HTTP 500 with GrsAI's plain JSON error body
    429         HTTP 429 with GrsAI's plain JSON error body and `Retry-After: 1`
"""

from __future__ import annotations

import logging
from typing import Literal

import httpx
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send

from service.simulator.errors import InjectedHTTPError

WireFault = Literal["html", "truncated", "close", "500", "429"]
WIRE_FAULTS: tuple[WireFault, ...] = ("html", "truncated", "close", "500", "429")

BAD_GATEWAY_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised by the app to abort an answer it has started.

    ASGI servers close the connection when an app raises after starting its response. An
    in-process client (`httpx.ASGITransport`) gets this exception itself: the same
    `httpx.RemoteProtocolError` a client of a real server sees.
    """

    def __init__(self) -> None:
        super().__init__("Server disconnected without sending a response (simulated)")


class DroppedConnection(Response):
    """Send the status line and headers, then abort before any body byte."""

    def __init__(self, promised: int) -> None:
        super().__init__(status_code=200, media_type="application/json")
        self.headers["content-length"] = str(max(promised, 1))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start the response, then abort it."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        raise ConnectionDropped


class QuietDrops(logging.Filter):
    """Keep the server's error log free of the tracebacks of simulated dropped connections."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop records that carry a `ConnectionDropped`."""
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))

    @classmethod
    def install(cls, logger: logging.Logger) -> None:
        """Add the filter to `logger` once."""
        if not any(isinstance(f, cls) for f in logger.filters):
            logger.addFilter(cls())


def broken_answer(kind: WireFault, intact: bytes) -> Response:
    """The response that replaces `intact` (the JSON body that would have been sent)."""
    if kind == "html":
        return HTMLResponse(BAD_GATEWAY_PAGE, status_code=502)
    if kind == "truncated":
        return Response(intact[: max(1, len(intact) // 2)], media_type="application/json")
    if kind == "close":
        return DroppedConnection(len(intact))
    return InjectedHTTPError(int(kind)).response()
