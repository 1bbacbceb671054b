"""Client API: submit tasks, read one, list them."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.asgi import header, send_json
from service.auth import api_key_from, authenticate
from service.context import scope_services, services
from service.errors import (
    BadRequest,
    NotFound,
    RelayError,
    UnsupportedMediaType,
    ValidationFailed,
)
from service.jsonbody import loads_object, read_body
from service.records import TASK_STATUSES

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


async def create_task(request: Request) -> JSONResponse:
    """POST /v1/tasks"""
    key = await authenticate(request)
    svc = services(request)
    try:
        svc.limiter.take(key.id)
    except RelayError:
        svc.metrics.rate_limited.inc()
        raise
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type.lower():
        raise UnsupportedMediaType("send the task as application/json")
    body = loads_object(
        await read_body(request, svc.settings.api_max_body_bytes, svc.settings.body_timeout)
    )
    task = await svc.submitter.submit(key, body, request.headers.get("idempotency-key"))
    return JSONResponse(task.to_json(svc.settings.public_base_url or ""), status_code=202)


class TaskLookup:
    """GET /v1/tasks/{id}: a plain ASGI endpoint (the busiest read; no Request, no Response)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the caller's task as JSON; 404 if it is not theirs or does not exist."""
        svc = scope_services(scope)
        authorization = (header(scope, b"authorization") or b"").decode("latin-1")
        key = await api_key_from(svc.storage, authorization)
        task_id = scope["path_params"]["task_id"]
        task = await svc.storage.task(task_id, key.id) if len(task_id) <= 64 else None
        if task is None:
            raise NotFound("no such task")
        document = task.to_json(svc.settings.public_base_url or "")
        await send_json(send, json.dumps(document, **_JSON).encode("utf-8"))


_JSON: dict[str, Any] = {"ensure_ascii": False, "allow_nan": False, "separators": (",", ":")}


def encode_cursor(seq: int) -> str:
    """An opaque keyset cursor."""
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Read a cursor made by `encode_cursor`; 400 on anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, seq = raw.partition(":")
        if version != "v1" or not (seq.isascii() and seq.isdigit()) or len(seq) > 18:
            raise ValueError(raw)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not one this API issued", code="invalid_cursor") from exc


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not (
        value.isascii() and value.isdigit() and len(value) <= 3 and 1 <= int(value) <= MAX_LIMIT
    ):
        raise ValidationFailed(
            f"limit must be an integer from 1 to {MAX_LIMIT}",
            fields=[{"field": "limit", "message": f"must be 1-{MAX_LIMIT}"}],
        )
    return int(value)


async def list_tasks(request: Request) -> JSONResponse:
    """GET /v1/tasks?status=&model=&limit=&cursor="""
    key = await authenticate(request)
    query = request.query_params
    status = query.get("status")
    if status is not None and status not in TASK_STATUSES:
        raise ValidationFailed(
            f"status must be one of {', '.join(TASK_STATUSES)}",
            fields=[{"field": "status", "message": "unknown status"}],
        )
    model = query.get("model")
    if model is not None and not 1 <= len(model) <= 100:
        raise ValidationFailed(
            "model must be 1-100 characters", fields=[{"field": "model", "message": "bad length"}]
        )
    limit = _limit(query.get("limit"))
    cursor = query.get("cursor")
    before = decode_cursor(cursor) if cursor else None
    tasks = await services(request).storage.list_tasks(
        key.id, status=status, model=model, limit=limit + 1, before_seq=before
    )
    page = tasks[:limit]
    next_cursor = encode_cursor(page[-1].seq) if len(tasks) > limit and page[-1].seq else None
    base = services(request).settings.public_base_url or ""
    return JSONResponse({"data": [t.to_json(base) for t in page], "next_cursor": next_cursor})


async def tasks_collection(request: Request) -> JSONResponse:
    """/v1/tasks: one route for both methods, so a 405 lists both in `Allow`."""
    if request.method == "POST":
        return await create_task(request)
    return await list_tasks(request)


routes = [
    Route("/v1/tasks", tasks_collection, methods=["GET", "POST"]),
    Route("/v1/tasks/{task_id}", TaskLookup(), methods=["GET"]),
]
