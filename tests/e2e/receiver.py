"""A client's own webhook endpoint on loopback, for delivery tests: scripted answers, a log."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    """One request the endpoint got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers `/hook/{behaviour}` by behaviour: ok, flaky (500 twice, then 200), down (503),
    redirect (302), gone (410), slow (waits `slow_seconds`, then 200)."""

    slow_seconds: float = 3.0
    log: list[Received] = field(default_factory=list)
    counts: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    overrides: dict[str, str] = field(default_factory=dict)
    port: int = 0
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    def url(self, behaviour: str, host: str = "127.0.0.1") -> str:
        """The URL answering with `behaviour`."""
        return f"http://{host}:{self.port}/hook/{behaviour}"

    def bodies(self, behaviour: str) -> list[Received]:
        """Requests received on one behaviour's path."""
        return [r for r in self.log if r.path == f"/hook/{behaviour}"]

    async def _hook(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.log.append(Received(request.url.path, dict(request.headers), await request.body()))
        self.counts[name] += 1
        behaviour = self.overrides.get(name, name)
        if behaviour == "flaky":
            return Response(status_code=200 if self.counts[name] > 2 else 500)
        if behaviour == "down":
            return Response(status_code=503)
        if behaviour == "redirect":
            return Response(status_code=302, headers={"Location": self.url("ok")})
        if behaviour == "gone":
            return Response(status_code=410)
        if behaviour == "slow":
            await asyncio.sleep(self.slow_seconds)
        return Response(status_code=200)

    def start(self) -> Receiver:
        """Serve from a thread on a free loopback port."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/hook/{name}", self._hook, methods=["POST"])])
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        while not self.server.started:
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)
