"""The OpenAPI 3.1 document of grsai-relay, built from the models that validate and answer.

The request body of `POST /v1/tasks` is `TaskCreate`, the very model that validates it; every
answer has a pydantic model here mirroring what the route returns (`Task.to_json`, the result
entries, `delivery_json`, the health checks, the webhook ACK and the one error shape), so a route
that drifts from its model fails the contract tests (tests/unit/test_openapi.py,
tests/e2e/test_contract.py) instead of surprising a client.
"""

from __future__ import annotations

import copy
from importlib import metadata

from service.api.openapi_grsai import SCHEMAS as GRSAI_SCHEMAS
from service.api.openapi_grsai import TAG as GRSAI_TAG
from service.api.openapi_grsai import grsai_paths
from service.api.openapi_live import live_paths
from service.api.openapi_models import RESULT_TYPES
from service.api.openapi_parts import (
    _REPLAYED,
    _REQUEST_ID,
    _RETRY_AFTER,
    BAD_BODY,
    JSON,
    NOT_FOUND,
    SHARED,
    STORAGE,
    TASK_ETAG,
    TASK_ID,
    TIMEOUT,
    TOO_LARGE,
    Json,
    _header,
    _op,
    _path,
    _query,
    answer,
    component_schemas,
    error,
    ref,
)
from service.domain.records import TASK_STATUSES
from service.settings import Settings


def _tasks() -> Json:
    location = {
        "description": "The task's URL (absolute under PUBLIC_BASE_URL, else its path).",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }
    submit = _op(
        "tasks", "createTask", "Submit a task to GrsAI",
        {
            "202": answer("Accepted by GrsAI (or the task this Idempotency-Key made).",
                          ref("Task"), Location=location,
                          **{"Idempotent-Replayed": _REPLAYED}),
            "400": error(f"{BAD_BODY}, `invalid_idempotency_key`."),
            "408": TIMEOUT,
            "409": error("`idempotency_in_flight`: the first request with this Idempotency-Key "
                         "is still being submitted (`error.task_id`)."),
            "413": TOO_LARGE,
            "415": error("`unsupported_media_type`: send application/json."),
            "422": error("`validation_failed` (`error.fields`; unknown model: "
                         "`error.known_models`; `mode` callback while the relay has no "
                         "PUBLIC_BASE_URL), `idempotency_key_reused`."),
            "429": error("`rate_limited`: too many submissions; retry after `Retry-After`.",
                         **{"Retry-After": {**_RETRY_AFTER, "required": True}}),
            "502": error("`upstream_rejected` (stored as failed, `error.task_id`; a retry with "
                         "the same Idempotency-Key replays it), `upstream_protocol_error`.",
                         **{"Idempotent-Replayed": _REPLAYED}),
            "503": error("`upstream_unavailable` (nothing submitted), `upstream_timeout`, "
                         "`upstream_outcome_unknown`, `storage_unavailable`.",
                         **{"Retry-After": _RETRY_AFTER}),
        },
        parameters=(_header(
            "Idempotency-Key",
            "Retries with the same key and body return the same task and send nothing again.",
            {"type": "string", "pattern": "^[!-~]{1,255}$"},
        ),),
        body={
            "required": True,
            "content": {JSON: {
                "schema": ref("TaskCreate"),
                "example": {"model": "nano-banana", "prompt": "a lighthouse at dusk",
                            "metadata": {"order": 1234}},
            }},
        },
        description="A parameter the model's GrsAI endpoint does not take is a 422; types are "
        "strict (`\"2\"` is not a number); values are checked against the model's allowed ones "
        "(the catalog, extensible with MODEL_CATALOG), and a value outside them is a 422 whose "
        "`fields` entry lists `allowed`. `mode` picks how GrsAI reports on this task (default "
        "TASK_MODE); stream mode falls back to poll mode while STREAM_MAX streams are open.",
    )  # fmt: skip
    listing = _op(
        "tasks", "listTasks", "List tasks, newest first",
        {
            "200": answer("One page.", ref("TaskPage")),
            "400": error("`invalid_cursor`: a cursor this API did not issue, or one sent with "
                         "filters other than those of the list it continues."),
            "422": error("`validation_failed`: bad `status`, `model` or `limit`."),
            "503": STORAGE,
        },
        parameters=(
            _query("status", "Only tasks in this state.", {"enum": list(TASK_STATUSES)}),
            _query("model", "Only tasks of this model.",
                   {"type": "string", "minLength": 1, "maxLength": 100}),
            _query("limit", "Page size (with a cursor: that list's page size unless given).",
                   {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
            _query("cursor", "`next_cursor` of the previous page. It carries the list's "
                   "filters: send it alone or with the same `status` and `model`.",
                   {"type": "string"}),
        ),
    )  # fmt: skip
    one = _op(
        "tasks", "getTask", "Look up a task (with `wait`: a long-poll)",
        {
            "200": answer("The task.", ref("Task"), ETag=TASK_ETAG),
            "404": NOT_FOUND,
            "405": error("`method_not_allowed`: the decoded path names a sub-resource that "
                         "does not take GET (a `task_id` holding `/`)."),
            "422": error("`validation_failed`: `wait` is not a number of seconds above 0 and "
                         "at most 60."),
            "503": STORAGE,
        },
        parameters=(
            TASK_ID,
            _query("wait", "Long-poll: answer once the task differs from the copy named by "
                   "`If-None-Match` (else from the task as the request found it), at once if "
                   "that copy is stale or the task is settled, else after this many seconds "
                   "with the unchanged task.",
                   {"type": "number", "exclusiveMinimum": 0, "maximum": 60}),
            _header("If-None-Match", "With `wait`: the ETag of the copy the caller holds.",
                    {"type": "string"}),
        ),
    )  # fmt: skip
    return {
        "/v1/tasks": {"post": submit, "get": listing},
        "/v1/tasks/{task_id}": {"get": one},
    }


def _results() -> Json:
    cache = {
        "ETag": {"description": "The file's SHA-256, quoted.", "schema": {"type": "string"}},
        "Cache-Control": {"schema": {"type": "string"}},
        "Accept-Ranges": {"schema": {"const": "bytes"}},
    }
    binary: Json = {kind: {"schema": {}} for kind in RESULT_TYPES}
    length = {"schema": {"type": "integer", "minimum": 0}}
    content_range = {"required": True, "schema": {"type": "string"}}
    headers = {"X-Request-ID": _REQUEST_ID, **cache}
    op = _op(
        "results", "getResultFile", "Download our copy of a result file",
        {
            "200": {"description": "The whole file, typed from its bytes.",
                    "headers": {**headers, "Content-Length": length}, "content": binary},
            "206": {"description": "The requested byte range.",
                    "headers": {**headers, "Content-Length": length,
                                "Content-Range": content_range},
                    "content": binary},
            "302": {"description": "With an S3 file store and `ASSET_PRESIGN_SECONDS` > 0: a "
                           "presigned URL of the object (valid that long) in `Location`.",
                    "headers": {"Location": {"schema": {"type": "string"}}}},
            "304": {"description": "`If-None-Match` matched.", "headers": headers},
            "404": error("`not_found`; `asset_pending` (not copied yet), `asset_failed` "
                         "(`error.reason`), `asset_pruned`, `asset_missing`."),
            "416": {**error("`range_not_satisfiable`: the range lies outside the file "
                            "(`error.size` gives its length)."),
                    "headers": {**headers, "Content-Range": content_range}},
            "503": error("`storage_unavailable` (the database), or `asset_store_unavailable`: "
                         "the S3 file store cannot be reached or refuses the relay.",
                         **{"Retry-After": {"schema": {"type": "integer"}}}),
        },
        parameters=(
            TASK_ID,
            _path("n", "Index in the task's `results`.",
                  {"type": "integer", "minimum": 0, "maximum": 9999}),
            _header("Range", "One byte range, `bytes=first-last`, `bytes=first-` or "
                    "`bytes=-suffix`; anything else (several ranges, other units) gets the whole "
                    "file.", {"type": "string", "examples": ["bytes=0-1023"]}),
            _header("If-None-Match", "ETags the caller holds.", {"type": "string"}),
            _header("If-Range", "Send the range only if the file still has this ETag.",
                    {"type": "string"}),
        ),
        description="Served to the task's owner only, streamed, cacheable for a year.",
    )  # fmt: skip
    return {"/v1/tasks/{task_id}/results/{n}": {"get": op}}


def _deliveries() -> Json:
    listing = _op(
        "deliveries", "listDeliveries", "A task's callback deliveries, with every attempt",
        {"200": answer("Every delivery.", ref("DeliveryList")), "404": NOT_FOUND,
         "503": STORAGE},
        parameters=(TASK_ID,),
    )  # fmt: skip
    redeliver = _op(
        "deliveries", "redeliver", "Send the task's final event again (same event id)",
        {
            "202": answer("Queued.", ref("Delivery")),
            "404": NOT_FOUND,
            "409": error("`nothing_to_redeliver`: not finished, or no callback_url."),
            "503": STORAGE,
        },
        parameters=(TASK_ID,),
    )  # fmt: skip
    replay = _op(
        "deliveries", "replayDeliveries", "Queue again this key's dead deliveries since a time",
        {
            "202": answer("Queued.", ref("Replayed")),
            "422": error("`validation_failed`: `since` is missing or not a time."),
            "503": STORAGE,
        },
        parameters=(_query("since", "RFC 3339 time or unix seconds.",
                           {"type": "string", "minLength": 1},
                           required=True),),
    )  # fmt: skip
    return {
        "/v1/tasks/{task_id}/deliveries": {"get": listing},
        "/v1/tasks/{task_id}/deliveries/redeliver": {"post": redeliver},
        "/v1/deliveries/replay": {"post": replay},
    }


def _operations_and_health() -> Json:
    callback = _op(
        "webhooks", "grsaiCallback", "GrsAI's callback for one task",
        {
            "200": answer("Stored (whatever its outcome).", ref("WebhookAck")),
            "400": error(f"{BAD_BODY}, `invalid_payload` (wrong shape or not this task's id); "
                         "the body is still recorded."),
            "404": error("`not_found`: unknown or malformed token (no further detail)."),
            "408": TIMEOUT,
            "413": TOO_LARGE,
            "503": STORAGE,
        },
        secured=False,
        parameters=(_path("token", "The task's callback token.", {"type": "string"}),),
        body={"required": True, "content": {JSON: {"schema": {}}, "*/*": {"schema": {}}}},
        description="Authenticated by its per-task token; any content type; terminal states "
        "are confirmed by polling GrsAI before they are believed.",
    )  # fmt: skip
    probe = _op(
        "webhooks", "publicUrlProbe", "Echo a nonce: the public-URL self-check",
        {
            "200": answer("The nonce, echoed.", {
                "type": "object", "required": ["probe", "service"],
                "properties": {"probe": {"type": "string"}, "service": {"const": "grsai-relay"}},
            }),
            "404": error("`not_found`: the nonce is not 16-64 URL-safe characters."),
        },
        secured=False,
        parameters=(_path("nonce", "16-64 characters of A-Z, a-z, 0-9, _ and -.",
                          {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"}),),
        description="The relay (and `grsai-relay doctor`) sends this through its own public "
        "URL; an echo proves the URL reaches a grsai-relay. Nothing is stored.",
    )  # fmt: skip
    prometheus = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/webhooks/grsai/{token}": {"post": callback},
        "/webhooks/probe/{nonce}": {"get": probe},
        "/healthz": {"get": _op("health", "healthz", "The process serves",
                                {"200": answer("Alive.", ref("Health"))}, secured=False)},
        "/readyz": {"get": _op("health", "readyz", "Ready to serve, each check by name", {
            "200": answer("Every check is ok.", ref("Readiness")),
            "503": answer("Some check is failing.", ref("Readiness")),
        }, secured=False)},
        "/metrics": {"get": {
            **_op("health", "metrics", "Prometheus metrics", {
                "200": {"description": "Prometheus text exposition format.",
                        "headers": {"X-Request-ID": _REQUEST_ID}, "content": prometheus},
                "401": error("`unauthorized`: METRICS_TOKEN is set and was not sent."),
                "403": error("`forbidden`: no METRICS_TOKEN is set and the caller is not on "
                             "loopback."),
            }, secured=False),
            "security": [{}, {"metricsToken": []}],
        }},
        "/openapi.json": {"get": _op("docs", "openapi", "This document", {
            "200": answer("OpenAPI 3.1.", {"type": "object"}),
        }, secured=False)},
        "/docs": {"get": _op("docs", "docs", "This document as a page", {
            "200": {"description": "A self-contained HTML page.",
                    "headers": {"X-Request-ID": _REQUEST_ID},
                    "content": {"text/html": {"schema": {"type": "string"}}}},
        }, secured=False)},
    }  # fmt: skip


def _version() -> str:
    try:
        return metadata.version("grsai-relay")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0.0.0"


def openapi_document(settings: Settings) -> Json:
    """The OpenAPI 3.1 document of every endpoint (server URL from `public_base_url`)."""
    return document_for(settings.public_base_url)


def document_for(public_base_url: str | None) -> Json:
    """The OpenAPI 3.1 document, served from `public_base_url` when there is one."""

    results = _results()
    doc: Json = {
        "openapi": "3.1.0",
        "info": {
            "title": "grsai-relay",
            "version": _version(),
            "summary": "A dependable relay for the GrsAI generation API.",
            "description": "All `/v1/*` endpoints need `Authorization: Bearer <api key>`. "
            'Errors are JSON, `{"error": {"code", "message"}}` (validation errors add `fields`), '
            "except on the `grsai-compatible` paths (GrsAI's own API), which answer GrsAI's "
            '`{"code", "msg", "data"}`; `/v1/files/*` takes a signed link instead of a key. '
            "Every GET also answers HEAD; other methods get 405 `method_not_allowed`.",
        },
        "paths": {
            **_tasks(),
            **live_paths(),
            **results,
            **_deliveries(),
            **_operations_and_health(),
            **grsai_paths(results["/v1/tasks/{task_id}/results/{n}"]["get"]),
        },
        "components": {
            "schemas": {**component_schemas(), **GRSAI_SCHEMAS},
            "responses": SHARED,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "METRICS_TOKEN (metrics only)."},
            },
            "parameters": {
                "X-Request-ID": _header(
                    "X-Request-ID",
                    "Correlates the request with the relay's log lines and is echoed back; a "
                    "value not matching `^[A-Za-z0-9._:-]{1,128}$` (or none) is replaced by a "
                    "generated id, never refused.",
                    {"type": "string"},
                )
            },
            "headers": {
                "X-Request-ID": {
                    "description": "The request's id, as logged.",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                }
            },
        },
        "tags": [{"name": name} for name in
                 ("tasks", "results", "deliveries", "webhooks", "health", "docs", GRSAI_TAG)],
    }  # fmt: skip
    if public_base_url:
        doc["servers"] = [{"url": public_base_url}]
    return copy.deepcopy(doc)  # callers get their own: nothing shared with module constants
