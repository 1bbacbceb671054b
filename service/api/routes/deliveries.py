"""Client callback deliveries: inspect, redeliver, replay dead ones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.api.auth import authenticate
from service.api.context import services
from service.clock import rfc3339
from service.domain.errors import Conflict, NotFound, ValidationFailed
from service.domain.records import Attempt, Delivery


def delivery_json(delivery: Delivery, attempts: list[Attempt] | None = None) -> dict[str, Any]:
    """The client-facing view of a delivery and its attempts."""
    body: dict[str, Any] = {
        "id": delivery.id,
        "event_type": delivery.event_type,
        "url": delivery.url,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": rfc3339(delivery.next_attempt_at)
        if delivery.status == "pending"
        else None,
        "event_at": rfc3339(delivery.event_at),
        "delivered_at": rfc3339(delivery.delivered_at),
        "dead_at": rfc3339(delivery.dead_at),
        "last_error": delivery.last_error,
    }
    if attempts is not None:
        body["attempt_log"] = [
            {
                "at": rfc3339(a.attempted_at),
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "error": a.error,
            }
            for a in attempts
        ]
    return body


async def _owned_task_id(request: Request) -> str:
    key = await authenticate(request)
    task_id = request.path_params["task_id"]
    task = await services(request).storage.task(task_id, key.id) if len(task_id) <= 64 else None
    if task is None:
        raise NotFound("no such task")
    return task.id


async def list_deliveries(request: Request) -> JSONResponse:
    """GET /v1/tasks/{id}/deliveries: every delivery with every attempt."""
    task_id = await _owned_task_id(request)
    found = await services(request).storage.deliveries_of(task_id)
    return JSONResponse({"data": [delivery_json(d, attempts) for d, attempts in found]})


async def redeliver(request: Request) -> JSONResponse:
    """POST /v1/tasks/{id}/deliveries/redeliver: send the final event again (same event id)."""
    task_id = await _owned_task_id(request)
    svc = services(request)
    delivery = await svc.storage.redeliver(task_id, svc.clock.now())
    if delivery is None:
        raise Conflict(
            "this task has no final event to redeliver (not finished, or no callback_url)",
            code="nothing_to_redeliver",
        )
    svc.deliverer.kick()
    return JSONResponse(delivery_json(delivery), status_code=202)


def _since(value: str | None) -> float:
    if value is None:
        raise ValidationFailed(
            "since is required (RFC 3339 time or unix seconds)",
            fields=[{"field": "since", "message": "required"}],
        )
    try:
        if value.replace(".", "", 1).isascii() and value.replace(".", "", 1).isdigit():
            return float(value[:20])
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError) as exc:
        raise ValidationFailed(
            "since must be an RFC 3339 time or unix seconds",
            fields=[{"field": "since", "message": "not a time"}],
        ) from exc


async def replay(request: Request) -> JSONResponse:
    """POST /v1/deliveries/replay?since=...: re-queue the caller's dead deliveries since then."""
    key = await authenticate(request)
    svc = services(request)
    count = await svc.storage.replay_dead(
        key.id, _since(request.query_params.get("since")), svc.clock.now()
    )
    svc.deliverer.kick()
    return JSONResponse({"requeued": count}, status_code=202)


routes = [
    Route("/v1/tasks/{task_id}/deliveries", list_deliveries, methods=["GET"]),
    Route("/v1/tasks/{task_id}/deliveries/redeliver", redeliver, methods=["POST"]),
    Route("/v1/deliveries/replay", replay, methods=["POST"]),
]
