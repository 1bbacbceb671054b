"""Per-request context: request id (accepted or generated, echoed), metrics, one log line."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import REQUEST_ID, redact
from service.metrics import Metrics

log = logging.getLogger("grsai_relay.http")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContext:
    """ASGI middleware wrapping every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request inside its context and account for it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
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
            method = scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.request_seconds.labels(route, method).observe(elapsed)
            params = scope.get("path_params") or {}
            log.info(
                "%s %s %d",
                method,
                redact(scope["path"]),
                status,
                extra={
                    "event": "request",
                    "method": method,
                    "path": redact(scope["path"]),
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "task_id": params.get("task_id"),
                },
            )
            REQUEST_ID.reset(token)
