"""GrsAI's callbacks: POST /webhooks/grsai/{token}; and the public-URL probe's echo.

The busiest endpoint, so it is a plain ASGI endpoint: no Request or Response objects, the
body read straight from `receive`. Errors are raised as usual and answered by the app's one
error handler.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.api.asgi import send_json
from service.api.context import scope_services
from service.api.jsonbody import receive_body
from service.domain.errors import NotFound, StorageUnavailable
from service.tunnel.probe import NONCE, PROBE_PATH, echo

ACK = b'{"code":0,"msg":"success"}'  # what GrsAI expects; built once


class GrsaiCallback:
    """An ASGI endpoint (an instance, so Starlette does not wrap it in a Request)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate by token, store the raw body with its outcome, then acknowledge."""
        svc = scope_services(scope)
        outcome = "unknown_token"
        try:
            task = await svc.ingestor.find_task(scope["path_params"]["token"])
            outcome = "refused_body"
            settings = svc.settings
            raw = await receive_body(
                scope, receive, settings.webhook_max_body_bytes, settings.body_timeout
            )
            outcome = "rejected"
            outcome = await svc.ingestor.receive(task, raw)
        except StorageUnavailable:
            outcome = "storage_unavailable"
            raise
        finally:
            svc.metrics.count_callback(outcome)
        await send_json(send, ACK)


async def probe(request: Request) -> JSONResponse:
    """GET /webhooks/probe/{nonce}: echo the nonce, so a self-check sent through the public URL
    knows it reached a grsai-relay (any replica: nothing is stored)."""
    nonce = request.path_params["nonce"]
    if not NONCE.fullmatch(nonce):
        raise NotFound("a probe nonce is 16-64 characters of A-Z, a-z, 0-9, _ and -")
    return JSONResponse(echo(nonce), headers={"cache-control": "no-store"})


routes = [
    Route("/webhooks/grsai/{token}", GrsaiCallback(), methods=["POST"]),
    Route(PROBE_PATH + "{nonce}", probe, methods=["GET"]),
]
