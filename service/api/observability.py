"""Per-request context: request id (accepted or generated, echoed), metrics, one log line."""

from __future__ import annotations

import itertools
import logging
import re
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.asgi import header
from service.logs import REQUEST_ID, redact
from service.metrics import Metrics

log = logging.getLogger("grsai_relay.http")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContext:
    """ASGI middleware wrapping every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, id_prefix: str) -> None:
        self.app = app
        self.metrics = metrics
        self._cache: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # Generated ids: a random per-process prefix and a counter, 32 hex digits in all
        # (unique without asking the OS for randomness on every request).
        self._id_prefix = id_prefix
        self._serial = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request inside its context and account for it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        text = (header(scope, b"x-request-id") or b"").decode("latin-1")
        request_id = (
            text if _REQUEST_ID.fullmatch(text) else f"{self._id_prefix}{next(self._serial):016x}"
        )
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            count, latency = self._children(route, scope["method"], status)
            count.inc()
            latency.observe(elapsed)
            if log.isEnabledFor(logging.INFO):  # building the line is work: skip it when off
                self._log(scope, route, status, elapsed)
            REQUEST_ID.reset(token)

    @staticmethod
    def _log(scope: Scope, route: str, status: int, elapsed: float) -> None:
        path = redact(scope["path"])
        params = scope.get("path_params") or {}
        log.info(
            "%s %s %d",
            scope["method"],
            path,
            status,
            extra={
                "event": "request",
                "method": scope["method"],
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "task_id": params.get("task_id"),
            },
        )

    def _children(self, route: str, method: str, status: int) -> tuple[Counter, Histogram]:
        """The labelled metric children of a route (looked up once, then cached)."""
        key = (route, method, status)
        found = self._cache.get(key)
        if found is None:
            found = (
                self.metrics.requests.labels(route, method, str(status)),
                self.metrics.request_seconds.labels(route, method),
            )
            if len(self._cache) < 4096:  # routes are templates, so this stays small
                self._cache[key] = found
        return found
