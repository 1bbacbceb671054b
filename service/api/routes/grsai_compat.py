"""GrsAI's own API, served by the relay: code written for GrsAI works by changing the base URL
and the key (issue #17).

    POST /v1/draw/completions, /v1/draw/nano-banana, /v1/draw/flux,
         /v1/video/sora-video, /v1/video/veo      submit, answering as `webHook` asks:
             "-1"   {"code":0,"msg":"success","data":{"id": <relay task id>}}; poll for it
             a URL  the same answer; GrsAI's callback bodies are delivered to the URL
             absent `data: {task}` lines until the task is final (`grsai_stream`)
    POST /v1/draw/result {"id": ...}              the task from the relay's database (no call
                                                  to GrsAI), or code -22

Each submit makes an ordinary relay task through the `Submitter` (tenancy, idempotency with an
`Idempotency-Key` header, copies, metrics). Errors on these paths are GrsAI's shape, rendered
in one place (`service.api.grsai_errors`, reached through the app's exception handlers).
"""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.api.asgi import header
from service.api.auth import authenticate
from service.api.context import Services, scope_services, services
from service.api.errors import REPLAYED
from service.api.grsai_errors import task_not_found
from service.api.grsai_render import compact, grsai_task, request_base
from service.api.jsonbody import read_body, receive_body
from service.api.routes.grsai_stream import stream_answer
from service.domain.catalog import ENDPOINTS, Catalog
from service.domain.errors import RelayError, UnsupportedMediaType, ValidationFailed
from service.domain.grsai_request import translate
from service.domain.grsai_shape import envelope
from service.domain.records import ApiKey
from service.domain.strict_json import loads_object

MAX_TASK_ID = 64


@functools.lru_cache(maxsize=4)
def _catalog(override: str | None) -> Catalog:
    return Catalog.from_override(override)


async def _admit(svc: Services, key: ApiKey) -> None:
    """The key's submission rate limit, counted as `POST /v1/tasks` counts it."""
    try:
        await svc.limiter.take(key.id)
    except RelayError:
        svc.metrics.rate_limited.inc()
        raise


def _json_answer(body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(compact(envelope(body)), media_type="application/json", headers=headers)


class GrsaiSubmit:
    """A GrsAI submit path: a plain ASGI endpoint, since a stream answer outlives the call."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key, read the body, make the task, answer in the mode `webHook` asks."""
        svc = scope_services(scope)
        key = await authenticate(Request(scope))
        await _admit(svc, key)
        content_type = (header(scope, b"content-type") or b"application/json").decode("latin-1")
        if "json" not in content_type.lower():
            raise UnsupportedMediaType("send the task as application/json")
        settings = svc.settings
        raw = await receive_body(scope, receive, settings.api_max_body_bytes, settings.body_timeout)
        wanted = translate(self.path, loads_object(raw), _catalog(settings.model_catalog))
        idempotency_key = (header(scope, b"idempotency-key") or b"").decode("latin-1") or None
        if wanted.mode == "stream":
            await stream_answer(scope, receive, send, key, wanted, idempotency_key)
            return
        if wanted.mode == "callback":
            accepted = await svc.submitter.submit(
                key, wanted.body, idempotency_key, callback_format="grsai"
            )
        else:
            accepted = await svc.submitter.submit(key, wanted.body, idempotency_key)
        answer = _json_answer({"id": accepted.task.id}, REPLAYED if accepted.replayed else None)
        await answer(scope, receive, send)


async def draw_result(request: Request) -> Response:
    """POST /v1/draw/result: the caller's task as GrsAI shows it, from the database alone."""
    key = await authenticate(request)
    svc = services(request)
    settings = svc.settings
    body = loads_object(
        await read_body(request, settings.api_max_body_bytes, settings.body_timeout)
    )
    task_id = body.get("id")
    if not isinstance(task_id, str) or not task_id:
        raise ValidationFailed(
            "id is required", fields=[{"field": "id", "message": "a task id string"}]
        )
    task = await svc.storage.task(task_id, key.id) if len(task_id) <= MAX_TASK_ID else None
    if task is None:  # unknown, or another key's: the same answer
        return task_not_found()
    return _json_answer(await grsai_task(svc, task, request_base(request.scope, svc)))


routes = [
    *(Route(endpoint.path, GrsaiSubmit(endpoint.path), methods=["POST"]) for endpoint in ENDPOINTS),
    Route("/v1/draw/result", draw_result, methods=["POST"]),
]
