"""The OpenAPI description of GrsAI's own API on the relay (`routes/grsai_compat.py`,
`routes/grsai_stream.py`) and of the signed result links (`routes/files.py`), tagged
`grsai-compatible`. Their answers and errors are GrsAI's shapes, not the relay's."""

from __future__ import annotations

import copy

from service.api.openapi_parts import _REQUEST_ID, _RETRY_AFTER, JSON, Json, _header, _op, _query
from service.domain.catalog import ENDPOINTS, Catalog

TAG = "grsai-compatible"
STREAM = "text/event-stream"
_REF = "#/components/schemas/{}"


def _ref(name: str) -> Json:
    return {"$ref": _REF.format(name)}


# One event of a stream answer (OpenAPI 3.1: a text/event-stream `schema` is one event): GrsAI
# sends only `data:` lines, each one task object.
_STREAM_EVENT: Json = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": _ref("GrsaiTask"), "description": "The task object's JSON."},
    },
}  # fmt: skip


_NULLABLE_STR = {"type": "string"}
SCHEMAS: dict[str, Json] = {
    "GrsaiError": {
        "type": "object",
        "required": ["code", "msg", "data"],
        "properties": {
            "code": {"type": "integer", "not": {"const": 0},
                     "description": "-1 for a refusal, -22 for an unknown task."},
            "msg": {"type": "string"},
            "data": {"type": "null"},
        },
    },
    "GrsaiTask": {
        "type": "object",
        "description": "GrsAI's flat task object; `id` is the relay's task id. Result URLs are "
        "signed links to the relay's stored copies once they exist (GrsAI's own before).",
        "required": ["id", "status", "progress", "results", "url", "failure_reason", "error"],
        "properties": {
            "id": {"type": "string"},
            "task_id": {"type": "string"},
            "status": {"enum": ["running", "succeeded", "failed"]},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "results": {"anyOf": [{"type": "null"}, {"type": "array", "items": {
                "type": "object", "required": ["url"],
                "properties": {"url": {"type": "string"}, "width": {"type": "integer"},
                               "height": {"type": "integer"}}}}]},
            "url": _NULLABLE_STR,
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "failure_reason": _NULLABLE_STR,
            "error": _NULLABLE_STR,
            "start_time": {"type": "integer"},
            "end_time": {"type": "integer"},
            "callback_url": _NULLABLE_STR,
        },
    },
    "GrsaiAccepted": {
        "type": "object",
        "required": ["code", "msg", "data"],
        "properties": {
            "code": {"const": 0},
            "msg": {"const": "success"},
            "data": {"type": "object", "required": ["id"],
                     "properties": {"id": {"type": "string"}}},
        },
    },
    "GrsaiResult": {
        "type": "object",
        "required": ["code", "msg", "data"],
        "properties": {"code": {"const": 0}, "msg": {"type": "string"},
                       "data": _ref("GrsaiTask")},
    },
}  # fmt: skip


def _error(description: str, **headers: Json) -> Json:
    return {
        "description": description,
        "headers": {"X-Request-ID": _REQUEST_ID, **headers},
        "content": {JSON: {"schema": _ref("GrsaiError")}},
    }


_ERRORS = {
    "401": _error("`{\"code\":-1}`: no, unknown or revoked API key."),
    "400": _error("Not a JSON object, a bad `webHook`, a bad Content-Length."),
    "408": _error("The body did not arrive in time."),
    "413": _error("The body is over API_MAX_BODY_BYTES."),
    "422": _error("A model the path does not serve, a missing prompt or id, a parameter value "
                  "the model does not take, an Idempotency-Key reused with another body."),
    "503": _error("The database or GrsAI is unavailable (nothing or maybe something was "
                  "submitted); try again.", **{"Retry-After": _RETRY_AFTER}),
}  # fmt: skip


def _submit(path: str, models: list[str]) -> Json:
    body = {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {
                "type": "string",
                "minLength": 1,
                "examples": models,
                "description": "A model this path serves (MODEL_CATALOG may add some).",
            },
            "prompt": {"type": "string", "minLength": 1},
            "webHook": {
                "type": "string",
                "description": 'Absent: stream; "-1": poll '
                "`/v1/draw/result`; a URL: GrsAI's callback bodies are delivered there.",
            },
            "shutProgress": {
                "type": "boolean",
                "description": "Stream or callbacks: only the final task object.",
            },
        },
        "additionalProperties": True,
    }
    name = path.rsplit("/", 1)[1].replace("-", " ")
    return _op(
        TAG, "grsai_" + path.removeprefix("/v1/").replace("/", "_").replace("-", "_"),
        f"GrsAI-compatible submit ({name})",
        {
            "200": {
                "description": "`webHook` \"-1\" or a URL: the relay task's id at once. No "
                "`webHook`: a stream of `data: {task object}` lines, one per change, the last "
                "one final (then the stream ends).",
                "headers": {"X-Request-ID": _REQUEST_ID},
                "content": {JSON: {"schema": _ref("GrsaiAccepted")},
                            STREAM: {"schema": _STREAM_EVENT,
                                     "example": 'data: {"id":"task_...","status":"running",'
                                     '"progress":0,...}\n\n'}},
            },
            **_ERRORS,
            "415": _error("Not application/json."),
            "429": _error("Too many submissions (SUBMIT_RATE_PER_MINUTE) or open streams "
                          "(STREAMS_PER_KEY); GrsAI answered 429.",
                          **{"Retry-After": {**_RETRY_AFTER, "required": True}}),
            "502": _error("GrsAI refused the task with an HTTP error, or answered unreadably."),
        },
        parameters=(_header("Idempotency-Key", "Retries with the same key and body return the "
                            "same task and send nothing again.",
                            {"type": "string", "pattern": "^[!-~]{1,255}$"}),),
        body={"required": True, "content": {JSON: {"schema": body}}},
        description="Only the fields this path takes reach GrsAI; others are left out. GrsAI's "
        "own refusals (code -1, e.g. insufficient credits) come back as GrsAI sent them (HTTP "
        "200).",
    )  # fmt: skip


def _result() -> Json:
    body = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
    return _op(
        TAG, "grsai_draw_result", "GrsAI-compatible poll: a task from the relay's database",
        {
            "200": {"description": "The task (code 0), or code -22 for an id this key does not "
                    "own. GrsAI is never called.",
                    "headers": {"X-Request-ID": _REQUEST_ID},
                    "content": {JSON: {"schema": {"anyOf": [_ref("GrsaiResult"),
                                                            _ref("GrsaiError")]}}}},
            **_ERRORS,
        },
        body={"required": True, "content": {JSON: {"schema": body}}},
    )  # fmt: skip


def _files(result_file: Json) -> Json:
    """The signed link: the same answers as the owner's download, plus 403, without a key."""
    op = copy.deepcopy(result_file)
    op |= {
        "tags": [TAG],
        "operationId": "getSignedResultFile",
        "security": [],
        "summary": "Download a result file through a signed link (no key)",
        "description": "The result URLs of the GrsAI-compatible paths. Served exactly as "
        "`getResultFile`; valid for RESULT_LINK_SECONDS.",
    }
    op["responses"].pop("401", None)
    op["responses"]["403"] = {
        "description": "`invalid_link` (wrong signature), `link_expired`.",
        "headers": {"X-Request-ID": _REQUEST_ID},
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    op["parameters"] = [
        *op["parameters"],
        _query("expires", "Unix seconds the link is valid until.",
               {"type": "integer", "minimum": 0}, required=True),
        _query("sig", "The link's signature.", {"type": "string", "maxLength": 64},
               required=True),
    ]  # fmt: skip
    return {"/v1/files/{task_id}/{n}": {"get": op}}


def grsai_paths(result_file: Json) -> Json:
    """Every GrsAI-compatible operation; `result_file` is the owner's download operation."""
    catalog = Catalog.from_override(None)
    paths: Json = {}
    for endpoint in ENDPOINTS:
        models = [m for m in catalog.models if catalog.endpoint(m) == endpoint]
        paths[endpoint.path] = {"post": _submit(endpoint.path, models)}
    return {**paths, "/v1/draw/result": {"post": _result()}, **_files(result_file)}
