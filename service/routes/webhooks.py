"""GrsAI's callbacks: POST /webhooks/grsai/{token}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.context import services
from service.jsonbody import read_body

ACK = {"code": 0, "msg": "success"}


async def grsai_callback(request: Request) -> JSONResponse:
    """Authenticate by token, store the raw body with its outcome, then acknowledge."""
    svc = services(request)
    task = await svc.ingestor.find_task(request.path_params["token"])
    raw = await read_body(request, svc.settings.webhook_max_body_bytes, svc.settings.body_timeout)
    await svc.ingestor.receive(task, raw)
    return JSONResponse(ACK)


routes = [Route("/webhooks/grsai/{token}", grsai_callback, methods=["POST"])]
