"""The building blocks of the OpenAPI document (`openapi.py`, `openapi_live.py`): component
schemas from the models, shared responses and headers, parameters, and one operation."""

from __future__ import annotations

from typing import Any

from service.api.openapi_models import MODELS
from service.jobs.schemas import TaskCreate

REF_TEMPLATE = "#/components/schemas/{model}"
JSON = "application/json"

Json = dict[str, Any]


def component_schemas() -> dict[str, Json]:
    """`components.schemas`: each model's JSON Schema with its `$defs` hoisted beside it."""
    found: dict[str, Json] = {}

    def add(name: str, schema: Json) -> None:
        if found.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are named {name}")

    request = TaskCreate.model_json_schema(ref_template=REF_TEMPLATE)
    for name, schema in request.pop("$defs", {}).items():
        add(name, schema)
    add("TaskCreate", request)
    for model in MODELS:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        for name, nested in schema.pop("$defs", {}).items():
            add(name, nested)
        add(model.__name__, schema)
    return found


def ref(name: str) -> Json:
    """A reference to a component schema."""
    return {"$ref": REF_TEMPLATE.format(model=name)}


_ERROR = {JSON: {"schema": ref("ErrorBody")}}
_REQUEST_ID = {"$ref": "#/components/headers/X-Request-ID"}
_RETRY_AFTER = {"description": "Seconds to wait.", "schema": {"type": "integer", "minimum": 0}}


def error(description: str, **headers: Json) -> Json:
    """An error answer (the one JSON error shape), `description` listing its codes."""
    return {
        "description": description,
        "headers": {"X-Request-ID": _REQUEST_ID, **headers},
        "content": _ERROR,
    }


def answer(description: str, schema: Json | None = None, **headers: Json) -> Json:
    """A JSON answer with `schema` (a bodiless one without)."""
    out: Json = {"description": description, "headers": {"X-Request-ID": _REQUEST_ID, **headers}}
    if schema is not None:
        out["content"] = {JSON: {"schema": schema}}
    return out


SHARED = {
    "Unauthorized": error("`unauthorized`: no, unknown or revoked API key."),
    "NotFound": error("`not_found`: no such resource for this API key."),
    "StorageUnavailable": error(
        "`storage_unavailable`: the database is busy, locked or full; try again.",
        **{"Retry-After": _RETRY_AFTER},
    ),
    "RequestTimeout": error("`request_timeout`: the body did not arrive in time."),
    "PayloadTooLarge": error("`payload_too_large`: the body is over the limit (`error.limit`)."),
}
UNAUTHORIZED, NOT_FOUND, STORAGE, TIMEOUT, TOO_LARGE = (
    {"$ref": f"#/components/responses/{name}"} for name in SHARED
)
BAD_BODY = "`invalid_json` (not a UTF-8 JSON object), `bad_request` (bad Content-Length)"


def _header(name: str, description: str, schema: Json) -> Json:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": schema}  # fmt: skip


def _path(name: str, description: str, schema: Json) -> Json:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema}  # fmt: skip


def _query(name: str, description: str, schema: Json, *, required: bool = False) -> Json:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema}  # fmt: skip


TASK_ID = _path("task_id", "The task's id.", {"type": "string", "minLength": 1})
TASK_ETAG = {
    "description": "The fingerprint of the task's state, quoted (the same on every replica).",
    "required": True,
    "schema": {"type": "string", "pattern": '^"[0-9a-f]+"$'},
}


def _op(
    tag: str,
    operation_id: str,
    summary: str,
    responses: dict[str, Json],
    *,
    secured: bool = True,
    parameters: tuple[Json, ...] = (),
    body: Json | None = None,
    description: str = "",
) -> Json:
    op: Json = {
        "tags": [tag],
        "operationId": operation_id,
        "summary": summary,
        "parameters": [*parameters, {"$ref": "#/components/parameters/X-Request-ID"}],
        "responses": {"401": UNAUTHORIZED, **responses} if secured else responses,
        "security": [{"bearer": []}] if secured else [],
    }
    if description:
        op["description"] = description
    if body is not None:
        op["requestBody"] = body
    return op


_REPLAYED = {
    "description": "`true` when this answer replays the one an earlier request with the same "
    "Idempotency-Key got (nothing was sent to GrsAI again); absent otherwise.",
    "schema": {"const": "true"},
}
