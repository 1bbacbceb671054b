"""Client API: submit tasks, read one, list them."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.api.asgi import header
from service.api.auth import api_key_from, authenticate
from service.api.context import scope_services, services
from service.api.errors import REPLAYED
from service.api.jsonbody import read_body
from service.api.routes.live import encode_task, long_poll, send_task, wait_seconds
from service.domain.errors import (
    BadRequest,
    NotFound,
    RelayError,
    UnsupportedMediaType,
    ValidationFailed,
)
from service.domain.records import TASK_STATUSES
from service.domain.strict_json import loads_object

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_MODEL = 100
MAX_CURSOR = 1024  # the longest cursor this API issues (a 100-character model) is ~560


async def create_task(request: Request) -> JSONResponse:
    """POST /v1/tasks"""
    key = await authenticate(request)
    svc = services(request)
    try:
        await svc.limiter.take(key.id)
    except RelayError:
        svc.metrics.rate_limited.inc()
        raise
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type.lower():
        raise UnsupportedMediaType("send the task as application/json")
    body = loads_object(
        await read_body(request, svc.settings.api_max_body_bytes, svc.settings.body_timeout)
    )
    accepted = await svc.submitter.submit(key, body, request.headers.get("idempotency-key"))
    base = svc.public.base
    headers = {"Location": f"{base}/v1/tasks/{accepted.task.id}"}
    if accepted.replayed:
        headers |= REPLAYED
    return JSONResponse(accepted.task.to_json(base), status_code=202, headers=headers)


class TaskLookup:
    """GET /v1/tasks/{id}: a plain ASGI endpoint (the busiest read; no Request, no Response)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the caller's task as JSON; 404 if it is not theirs or does not exist.
        With `?wait=N`, a long-poll (`live`)."""
        svc = scope_services(scope)
        authorization = (header(scope, b"authorization") or b"").decode("latin-1")
        key = await api_key_from(svc.storage, authorization, demo_mode=svc.demo_mode)
        if scope["query_string"] and (seconds := wait_seconds(scope["query_string"])):
            await long_poll(scope, receive, send, key, seconds)
            return
        task_id = scope["path_params"]["task_id"]
        task = await svc.storage.task(task_id, key.id) if len(task_id) <= 64 else None
        if task is None:
            raise NotFound("no such task")
        await send_task(send, *encode_task(task, svc.public.base))


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts, and the list it belongs to (its filters and page size).

    The cursor carries the filters so that following `next_cursor` alone pages the same list;
    a request that names other filters gets 400 `invalid_cursor`. It is validated as strictly
    as the query parameters and only ever reads the caller's own tasks, so an edited cursor
    reaches nothing the query parameters would not.
    """

    seq: int
    status: str | None
    model: str | None
    limit: int

    def encode(self) -> str:
        """The opaque form handed out as `next_cursor`."""
        fields = {"v": 2, "seq": self.seq, "status": self.status, "model": self.model}
        raw = json.dumps({**fields, "limit": self.limit}, ensure_ascii=False, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def filters(self) -> str:
        """The filters, as a reader would write them in the query string."""
        named = [f"{k}={v}" for k, v in (("status", self.status), ("model", self.model)) if v]
        return "&".join(named) or "no filter"


def _invalid_cursor(message: str = "cursor is not one this API issued") -> BadRequest:
    return BadRequest(message, code="invalid_cursor")


def decode_cursor(cursor: str) -> Cursor:
    """Read a cursor made by `Cursor.encode`; 400 `invalid_cursor` on anything else."""
    if len(cursor) > MAX_CURSOR:
        raise _invalid_cursor()
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error) as exc:  # JSONDecodeError, UnicodeDecodeError alike
        raise _invalid_cursor() from exc
    if not isinstance(raw, dict) or raw.keys() != {"v", "seq", "status", "model", "limit"}:
        raise _invalid_cursor()
    seq, status, model, limit = raw["seq"], raw["status"], raw["model"], raw["limit"]
    if (
        raw["v"] != 2
        or type(seq) is not int
        or not 0 < seq < 10**18
        or not (status is None or status in TASK_STATUSES)
        or not (model is None or (isinstance(model, str) and 1 <= len(model) <= MAX_MODEL))
        or type(limit) is not int
        or not 1 <= limit <= MAX_LIMIT
    ):
        raise _invalid_cursor()
    return Cursor(seq, status, model, limit)


def _limit(value: str | None) -> int | None:
    if value is None:
        return None
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
    if model is not None and not 1 <= len(model) <= MAX_MODEL:
        raise ValidationFailed(
            f"model must be 1-{MAX_MODEL} characters",
            fields=[{"field": "model", "message": "bad length"}],
        )
    limit = _limit(query.get("limit"))
    before = None
    if raw_cursor := query.get("cursor"):
        cursor = decode_cursor(raw_cursor)
        asked = (status or cursor.status, model or cursor.model)
        if asked != (cursor.status, cursor.model):
            raise _invalid_cursor(
                f"this cursor continues the list with {cursor.filters()}; send it alone or with "
                "the same filters, or start a new list without a cursor"
            )
        status, model, before = cursor.status, cursor.model, cursor.seq
        limit = limit or cursor.limit
    limit = limit or DEFAULT_LIMIT
    tasks = await services(request).storage.list_tasks(
        key.id, status=status, model=model, limit=limit + 1, before_seq=before
    )
    page = tasks[:limit]
    last = page[-1].seq if page else None
    next_cursor = None
    if len(tasks) > limit and last:
        next_cursor = Cursor(last, status, model, limit).encode()
    base = services(request).public.base
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
