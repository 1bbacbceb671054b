"""A load balancer for tests: each request to a random backend, skipping dead ones."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones httpx and Starlette set themselves.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}
_HOP |= {"proxy-connection", "proxy-authenticate", "proxy-authorization", "trailer"}


@dataclass
class RandomProxy:
    """A load balancer on 127.0.0.1: each request goes to a random backend; a backend that
    refuses the connection (dead, restarting) is skipped for another, as a real one does."""

    backends: list[str]
    forwarded: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    broken: Counter[str] = field(default_factory=Counter)  # sent, then no answer: a 502
    port: int = 0
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    _client: httpx.AsyncClient | None = None
    _rng: random.Random = field(default_factory=lambda: random.Random(11))

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # No keep-alive: every request opens its own connection, so a refused connection
        # always means nothing was sent, and a killed backend leaves no stale connection.
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
            self._client = client
            yield

    async def _forward(self, request: Request) -> Response:
        assert self._client is not None
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        for backend in self._rng.sample(self.backends, len(self.backends)):
            try:
                answer = await self._client.request(
                    request.method, backend + target, content=body, headers=headers
                )
            except (httpx.ConnectError, AttributeError):
                # AttributeError: anyio 4's socket stream asks a transport that a reset has just
                # closed for its socket (a backend killed with connections in its listen queue),
                # while httpcore is still connecting: nothing was sent either way.
                self.refused[backend] += 1
                continue
            except httpx.HTTPError as exc:
                self.broken[f"{backend} {type(exc).__name__}"] += 1
                return Response(status_code=502)
            self.forwarded[backend] += 1
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            return Response(answer.content, status_code=answer.status_code, headers=kept)
        return Response(status_code=502)  # every backend refused

    def start(self) -> RandomProxy:
        """Serve from a thread on a free loopback port."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
        app = Starlette(
            routes=[Route("/{path:path}", self._forward, methods=methods)],
            lifespan=self._lifespan,
        )
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the proxy did not start")
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)
