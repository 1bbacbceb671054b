"""The OpenAPI description of the live status stream (`routes/live.py`); the long-poll is
documented with `getTask` in `openapi.py`."""

from __future__ import annotations

from service.api.openapi_parts import (
    _REQUEST_ID,
    _RETRY_AFTER,
    NOT_FOUND,
    STORAGE,
    TASK_ID,
    Json,
    _header,
    _op,
    error,
    ref,
)

STREAM = "text/event-stream"
_EXAMPLE = 'event: task\nid: 5b0c4e9f0a1d2c3b4a5f6e7d\ndata: {"id":"task_3kq9...",...}\n\n'

# Each event of the stream (OpenAPI 3.1: a text/event-stream `schema` describes one event).
EVENT: Json = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "task"},
        "id": {"type": "string", "pattern": "^[0-9a-f]+$",
               "description": "The state's ETag, without quotes (send it as Last-Event-ID)."},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": ref("Task"), "description": "The task's JSON."},
    },
}  # fmt: skip


def live_paths() -> Json:
    """`GET /v1/tasks/{task_id}/events`."""
    events = _op(
        "tasks", "streamTaskEvents", "Follow a task as Server-Sent Events until it settles",
        {
            "200": {
                "description": "The stream: an `event: task` whose `data` is the task's JSON "
                "(a `Task`) and whose `id` is that state's ETag, now and after each change, "
                "until the task is settled (final, no result file still being copied); "
                "`: ping` comments while idle. It ends when the task settles or the relay "
                "stops (reconnect with `Last-Event-ID`).",
                "headers": {"X-Request-ID": _REQUEST_ID},
                "content": {STREAM: {"schema": EVENT, "example": _EXAMPLE}},
            },
            "204": {"description": "The task is settled and `Last-Event-ID` names its state: "
                    "nothing more will come.", "headers": {"X-Request-ID": _REQUEST_ID}},
            "404": NOT_FOUND,
            "429": error("`too_many_streams`: the API key holds STREAMS_PER_KEY open streams "
                         "(`error.limit`).",
                         **{"Retry-After": {**_RETRY_AFTER, "required": True}}),
            "503": STORAGE,
        },
        parameters=(
            TASK_ID,
            _header("Last-Event-ID", "The `id` of the last event received: the current state "
                    "is sent only if it differs.", {"type": "string"}),
        ),
        description="Woken by the change itself (on PostgreSQL, on any replica). Fast changes "
        "may be merged: each event is the task's latest state.",
    )  # fmt: skip
    return {"/v1/tasks/{task_id}/events": {"get": events}}
