"""GrsAI's callbacks: POST /webhooks/grsai/{token}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.context import services
from service.errors import StorageUnavailable
from service.jsonbody import read_body

ACK = b'{"code":0,"msg":"success"}'  # what GrsAI expects; built once


async def grsai_callback(request: Request) -> Response:
    """Authenticate by token, store the raw body with its outcome, then acknowledge."""
    svc = services(request)
    outcome = "unknown_token"
    try:
        task = await svc.ingestor.find_task(request.path_params["token"])
        outcome = "refused_body"
        raw = await read_body(
            request, svc.settings.webhook_max_body_bytes, svc.settings.body_timeout
        )
        outcome = "rejected"
        outcome = await svc.ingestor.receive(task, raw)
    except StorageUnavailable:
        outcome = "storage_unavailable"
        raise
    finally:
        svc.metrics.count_callback(outcome)
    return Response(ACK, media_type="application/json")


routes = [Route("/webhooks/grsai/{token}", grsai_callback, methods=["POST"])]
