"""Serving the app with uvicorn, hardened against slow clients.

The app is served on what `uvicorn[standard]` gives a user: httptools and uvloop (h11 only
where httptools is missing, or when HTTP_PROTOCOL asks for it). uvicorn bounds the idle time
between requests (keep-alive) but not the time a client takes to send its request head, so a
client trickling headers byte by byte could hold a connection forever. Both protocol classes
here close any connection whose request head is not complete within `HEADER_TIMEOUT` seconds,
and answer a request their parser refuses with the service's JSON 400 (uvicorn's is plain text);
the body has its own deadline (`BODY_TIMEOUT`, see `jsonbody`), enforced by the app on either.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import math
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.api.errors import error_response
from service.app import stop_streams
from service.domain.errors import BadRequest
from service.settings import Settings

_REFUSED = bytes(
    error_response(
        BadRequest(
            "malformed HTTP/1.1 request: its request line, a header or its Content-Length"
            " could not be parsed"
        )
    ).body
)
_REFUSED_HEAD = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_REFUSED)
)


class HeadDeadline(asyncio.Protocol):
    """A clock on each request head: armed when a connection opens and after each response,
    stopped once a head is parsed; if it runs out the connection is closed."""

    header_timeout: float = 10.0
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refuses gets the service's JSON error, not plain text."""
        self.transport.write(_REFUSED_HEAD + _REFUSED)
        self.transport.close()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class DeadlineH11Protocol(HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving each request head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seen_cycle: object | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn narrows the base signature too
        """Start the clock for the first request head."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        """Stop the clock once a new request head has been parsed."""
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle
            self._disarm()

    def on_response_complete(self) -> None:
        """Restart the clock for the next request head on a kept-alive connection. It starts
        before uvicorn looks for that head: one already received (pipelined) stops it at once."""
        if not self.transport.is_closing():
            self._arm()
        super().on_response_complete()


def _httptools_protocol() -> type[HeadDeadline] | None:
    """`DeadlineHttpToolsProtocol`, or None where httptools is not installed."""
    if importlib.util.find_spec("httptools") is None:
        return None
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class DeadlineHttpToolsProtocol(HeadDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol with a deadline on receiving each request head."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as above
            """Start the clock for the first request head."""
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            """Stop the clock."""
            self._disarm()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            """Stop the clock: a head has been parsed."""
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            """Restart the clock for the next head, unless one is already parsed and waiting
            (pipelined), which uvicorn starts now."""
            waiting = bool(self.pipeline)
            super().on_response_complete()
            if not waiting and not self.transport.is_closing():
                self._arm()

    return DeadlineHttpToolsProtocol


def protocol_class(header_timeout: float, http: str = "auto") -> type[HeadDeadline]:
    """The protocol class to serve with: httptools (`auto`, where installed) or h11, each with
    this head deadline."""
    base: type[HeadDeadline] | None = DeadlineH11Protocol
    if http in ("auto", "httptools"):
        base = _httptools_protocol() or (DeadlineH11Protocol if http == "auto" else None)
    if base is None:
        raise RuntimeError("HTTP_PROTOCOL=httptools but httptools is not installed")
    name = base.__name__.replace("Deadline", "Relay")
    return type(name, (base,), {"header_timeout": header_timeout})


GC_YOUNG_THRESHOLD = 10_000
STARTUP_FAILURE = 3  # uvicorn's exit code when the app fails to start


def settle_heap() -> None:
    """Tune the cyclic GC for serving.

    Everything built so far (modules, the app) lives as long as the process, yet every full
    collection would walk it again: it is frozen out of the collector's sight (under load that
    was about a tenth of the event loop's time). And the youngest generation is collected
    after 10,000 allocations instead of 700: with many requests in flight, a small threshold
    keeps walking their live objects (about 5% of a callback's instructions, by callgrind).
    Garbage is still collected; cycles just live a little longer.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class _Server(uvicorn.Server):
    """uvicorn's server, telling `on_started` once the app has started and the socket serves,
    and `on_stopping` as soon as it starts to shut down (before it drains the connections)."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_started: Callable[[], None] | None,
        on_stopping: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._on_stopping = on_stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End the app's open streams first: uvicorn waits for every response to finish."""
        if self._on_stopping is not None:
            self._on_stopping()
        await super().shutdown(sockets=sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then report it."""
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started()


def serve(
    app: Starlette,
    settings: Settings,
    sock: socket.socket,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Run `app` on the bound `sock` until SIGINT/SIGTERM, then drain in-flight requests within
    SHUTDOWN_TIMEOUT. `on_started` is called once the app has started and serves.

    uvicorn re-raises the signal it caught once it has shut down, which would end the process
    "killed by SIGTERM"; a graceful stop is a success, so the re-raised SIGTERM is absorbed and
    the process exits 0.
    """
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    settle_heap()
    try:
        _run(app, settings, sock, on_started)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(
    app: Starlette,
    settings: Settings,
    sock: socket.socket,
    on_started: Callable[[], None] | None,
) -> None:
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(settings.header_timeout, settings.http_protocol),
        log_level=settings.log_level,
        log_config=None,  # keep our logging set-up (with its redaction filter)
        access_log=False,  # requests are logged once, by our middleware
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
        timeout_keep_alive=5,
    )
    server = _Server(config, on_started, lambda: stop_streams(app))
    # uvicorn re-raises the SIGINT it stopped on, once stopped
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])  # bound before anything else started (see `preflight`)
    if not server.started:  # as `uvicorn.run` does: the app failed to start
        sys.exit(STARTUP_FAILURE)
