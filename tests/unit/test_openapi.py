"""The OpenAPI document: valid OpenAPI 3.1, complete, and true to what the routes answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from schemathesis.core.result import Err
from starlette.routing import Mount, Route

from service.api.errors import error_body
from service.api.openapi import document_for, openapi_document
from service.api.openapi_parts import REF_TEMPLATE
from service.api.routes import docs
from service.domain.records import Asset, Attempt, Delivery, delivery_json
from service.jobs.schemas import TaskCreate
from tests.unit.conftest import RELAY_URL, MakeRelay, Relay

JSON = dict[str, Any]
METHODS = {"get", "post", "put", "patch", "delete"}
SIGNED_FILE = "/v1/files/{task_id}/{n}"


@pytest.fixture(name="document")
def _document() -> JSON:
    return document_for(RELAY_URL)


@pytest.fixture(name="docs_relay")
async def _docs_relay(make_relay: MakeRelay) -> Relay:
    """A relay whose app also serves the docs routes."""
    relay = await make_relay()
    relay.app.router.routes.extend(docs.routes)
    return relay


def operations(document: JSON) -> Iterator[tuple[str, str, JSON]]:
    """(path, method, operation) of every documented operation."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def resolve(document: JSON, node: JSON) -> JSON:
    """`node`, or what its `$ref` points at."""
    while "$ref" in node:
        target: JSON = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def schema_of(document: JSON, path: str, method: str, status: int) -> jsonschema_rs.Validator:
    """A validator for the JSON body documented for `status` of one operation."""
    response = resolve(document, document["paths"][path][method]["responses"][str(status)])
    body = response["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for(
        {**body, "components": document["components"]}, validate_formats=True
    )


def conforms(document: JSON, path: str, method: str, response: httpx.Response) -> JSON:
    """Assert `response` is documented and its JSON body matches the schema; return the body."""
    responses = document["paths"][path][method]["responses"]
    assert str(response.status_code) in responses, (path, method, response.status_code)
    documented = resolve(document, responses[str(response.status_code)])
    for name, header in documented.get("headers", {}).items():
        if resolve(document, header).get("required"):
            assert name in response.headers, (path, method, response.status_code, name)
    body: JSON = response.json()
    schema_of(document, path, method, response.status_code).validate(body)
    return body


def test_document_is_valid_openapi_3_1(document: JSON) -> None:
    """The document passes the OpenAPI 3.1 meta-schema and every operation loads."""
    assert document["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()
    loaded = list(schema.get_all_operations())
    assert [r.err() for r in loaded if isinstance(r, Err)] == []
    assert len(loaded) == sum(1 for _ in operations(document))


def test_component_schemas_are_valid_json_schema(document: JSON) -> None:
    """Every component is a valid JSON Schema 2020-12 and every `$ref` resolves."""
    for schema in document["components"]["schemas"].values():
        jsonschema_rs.meta.validate(schema)
    for target in re.findall(r"'\$ref': '(#/[^']+)'", repr(document)):
        assert resolve(document, {"$ref": target}), target


def test_request_schema_is_the_validating_model(document: JSON) -> None:
    """POST /v1/tasks documents exactly the pydantic model that validates its body."""
    body = document["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/TaskCreate"}
    assert document["components"]["schemas"]["TaskCreate"] == TaskCreate.model_json_schema(
        ref_template=REF_TEMPLATE
    )
    TaskCreate.model_validate(body["example"])


# The dashboard is HTML for people, not API: undocumented by design (service.api.dashboard).
UNDOCUMENTED = {
    ("/dashboard", "get"),
    ("/dashboard/sign-in", "get"),
    ("/dashboard/sign-in", "post"),
    ("/dashboard/sign-out", "post"),
    ("/dashboard/tasks/{task_id}", "get"),
    ("/dashboard/tasks/{task_id}/redeliver", "post"),
    ("/dashboard/tasks/{task_id}/files/{n}", "get"),
    ("/dashboard/tasks/{task_id}/thumbs/{n}", "get"),
    ("/dashboard/events", "get"),
}
UNDOCUMENTED_MOUNTS = {"/dashboard/static"}  # the dashboard's CSS, script and icon


async def test_every_route_is_documented(docs_relay: Relay, document: JSON) -> None:
    """Each (path, method) the app routes is documented, bar the dashboard's pages (named in
    UNDOCUMENTED, none of them in the document), and each documented one is routed."""
    routed = {
        (route.path, method.lower())
        for route in docs_relay.app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"  # Starlette adds HEAD to every GET
    }
    mounts = {route.path for route in docs_relay.app.routes if isinstance(route, Mount)}
    documented = {(path, method) for path, method, _ in operations(document)}
    assert routed >= UNDOCUMENTED
    assert mounts == UNDOCUMENTED_MOUNTS
    assert not any(path.startswith("/dashboard") for path, _ in documented)
    assert routed - UNDOCUMENTED == documented


def test_errors_use_the_one_error_shape(document: JSON) -> None:
    """Every 4xx/5xx answer is the JSON error body, bar the readiness 503."""
    for path, method, operation in operations(document):
        for status, reference in operation["responses"].items():
            response = resolve(document, reference)
            if int(status) < 400 or (path, status) in {("/readyz", "503")}:
                continue
            schema = response["content"]["application/json"]["schema"]
            grsai = operation["tags"] == ["grsai-compatible"] and path != SIGNED_FILE
            shape = "GrsaiError" if grsai else "ErrorBody"  # GrsAI's paths answer GrsAI's
            assert schema == {"$ref": f"#/components/schemas/{shape}"}, (path, method, status)


def test_secured_operations_document_401(document: JSON) -> None:
    """Every operation that takes a bearer key says so and documents its 401."""
    for path, method, operation in operations(document):
        if path.startswith("/v1/") and path != SIGNED_FILE:  # a signed link needs no key
            assert operation["security"] == [{"bearer": []}], (path, method)
        if any(requirement for requirement in operation["security"]):
            assert "401" in operation["responses"], (path, method)


def test_rate_limit_answer_carries_retry_after(document: JSON) -> None:
    """429 on submit documents the Retry-After header as always present."""
    response = document["paths"]["/v1/tasks"]["post"]["responses"]["429"]
    assert response["headers"]["Retry-After"]["required"] is True


def test_server_url_follows_the_public_base_url(tmp_path: Any) -> None:
    """`servers` is the public base URL, absent in poll mode."""
    from tests.unit.conftest import relay_settings

    assert openapi_document(relay_settings(tmp_path))["servers"] == [{"url": RELAY_URL}]
    assert "servers" not in openapi_document(relay_settings(tmp_path, public_base_url=None))


def test_error_body_matches_the_error_schema(document: JSON) -> None:
    """`error_body`, with fields and extra keys, is what ErrorBody describes."""
    validator = schema_of(document, "/v1/tasks", "post", 422)
    validator.validate(
        error_body("validation_failed", "bad", fields=[{"field": "x", "message": "y"}])
    )
    validator.validate(error_body("validation_failed", "bad", known_models=["a"], other=1))
    assert not validator.is_valid({"error": {"code": "x"}})
    assert not validator.is_valid({"error": {"code": "Bad Code", "message": "m"}})


def test_delivery_json_matches_the_delivery_schema(document: JSON) -> None:
    """`delivery_json` with and without its attempt log is what Delivery describes."""
    delivery = Delivery(
        "evt_1", "task_1", "key_1", "task.succeeded", "https://client.example/hook", "pending",
        1, 1_700_000_100.0, 1_700_000_000.0, last_error="HTTP 500",
    )  # fmt: skip
    attempts = [Attempt("evt_1", 1_700_000_001.0, 500, 12.5, "HTTP 500")]
    redelivered = "/v1/tasks/{task_id}/deliveries/redeliver"
    schema_of(document, redelivered, "post", 202).validate(delivery_json(delivery))
    listed = {"data": [delivery_json(delivery, attempts)]}
    schema_of(document, "/v1/tasks/{task_id}/deliveries", "get", 200).validate(listed)


async def test_task_answers_conform_through_their_life(docs_relay: Relay, document: JSON) -> None:
    """Submit, look up, succeed, copy, fail a copy, list: every answer matches its schema."""
    relay = docs_relay
    one = "/v1/tasks/{task_id}"

    async def look_up(task_id: str) -> JSON:
        response = await relay.client.get(f"/v1/tasks/{task_id}", headers=relay.auth())
        return conforms(document, one, "get", response)

    created = conforms(document, "/v1/tasks", "post", await relay.submit(metadata={"n": 1}))
    task_id = created["id"]
    assert (await look_up(task_id))["status"] == "pending"
    urls = ("https://cdn.example/a.png", "https://cdn.example/b.png")
    callback = relay.grsai.succeed(relay.grsai.issued[-1], *urls)
    ack = await relay.callback(relay.grsai.token(), callback)
    conforms(document, "/webhooks/grsai/{token}", "post", ack)
    copying = await look_up(task_id)
    assert [r["asset"]["status"] for r in copying["results"]] == ["pending", "pending"]
    stored = Asset(task_id, 0, urls[0], "stored", 1, None, None, "ab" * 32, "image/png", 10, 2, 3,
                   1_700_000_000.5)  # fmt: skip
    failed = Asset(task_id, 1, urls[1], "failed", 5, None, "HTTP 404")
    for asset in (stored, failed):  # recorded directly: what matters is how they are shown
        await relay.storage.save_asset(asset, relay.clock.now())
    body = await look_up(task_id)
    assert [r["asset"]["status"] for r in body["results"]] == ["stored", "failed"]
    missing = await relay.client.get(f"/v1/tasks/{task_id}/results/0", headers=relay.auth())
    conforms(document, "/v1/tasks/{task_id}/results/{n}", "get", missing)
    assert missing.json()["error"]["code"] == "asset_missing"
    page = await relay.client.get("/v1/tasks", params={"limit": 1}, headers=relay.auth())
    assert conforms(document, "/v1/tasks", "get", page)["data"][0]["id"] == task_id


async def test_error_answers_conform(docs_relay: Relay, document: JSON) -> None:
    """A sample of error answers on every route family matches the documented error codes."""
    relay = docs_relay
    client = relay.client
    cases: list[tuple[str, str, httpx.Response]] = [
        ("/v1/tasks", "post", await client.post("/v1/tasks", json={"model": "x"})),
        ("/v1/tasks", "post", await relay.submit(model="no-such-model")),
        ("/v1/tasks", "post", await client.post("/v1/tasks", content=b"[1]",
                                                headers=relay.auth())),
        ("/v1/tasks", "post", await client.post("/v1/tasks", content=b"x", headers={
            **relay.auth(), "Content-Type": "text/plain"})),
        ("/v1/tasks", "get", await client.get("/v1/tasks?cursor=zz", headers=relay.auth())),
        ("/v1/tasks", "get", await client.get("/v1/tasks?limit=0", headers=relay.auth())),
        ("/v1/tasks/{task_id}", "get", await client.get("/v1/tasks/nope", headers=relay.auth())),
        ("/v1/tasks/{task_id}/results/{n}", "get",
         await client.get("/v1/tasks/nope/results/0", headers=relay.auth())),
        ("/v1/tasks/{task_id}/deliveries", "get",
         await client.get("/v1/tasks/nope/deliveries", headers=relay.auth())),
        ("/v1/tasks/{task_id}/deliveries/redeliver", "post",
         await client.post("/v1/tasks/nope/deliveries/redeliver", headers=relay.auth())),
        ("/v1/deliveries/replay", "post",
         await client.post("/v1/deliveries/replay", headers=relay.auth())),
        ("/v1/deliveries/replay", "post",
         await client.post("/v1/deliveries/replay?since=0", headers=relay.auth())),
        ("/webhooks/grsai/{token}", "post", await relay.callback("nope", {})),
        ("/healthz", "get", await client.get("/healthz")),
        ("/readyz", "get", await client.get("/readyz")),
    ]  # fmt: skip
    for path, method, response in cases:
        conforms(document, path, method, response)
    statuses = [response.status_code for _, _, response in cases]
    assert statuses == [401, 422, 400, 415, 400, 422, 404, 404, 404, 404, 422, 202, 404, 200, 503]


async def test_serves_the_document_and_the_page(docs_relay: Relay, document: JSON) -> None:
    """/openapi.json is the document; /docs is a page that needs nothing from elsewhere."""
    client = docs_relay.client
    served = await client.get("/openapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert served.json() == document
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert re.search(r"(src|href)=\"?(https?:)?//", page.text) is None
    assert 'fetch("openapi.json")' in page.text
    assert "innerHTML" not in page.text


async def test_other_methods_get_405_listing_the_documented_ones(
    docs_relay: Relay, document: JSON
) -> None:
    """An undocumented method on a documented path is a JSON 405 whose Allow header lists
    exactly the documented methods (and HEAD beside GET), as RFC 9110 15.5.6 requires."""
    wrong: dict[str, str] = {}
    for path, item in document["paths"].items():
        methods = {m.upper() for m in item if m in METHODS}
        allowed = methods | ({"HEAD"} if "GET" in methods else set())
        url = path.replace("{task_id}", "task_x").replace("{n}", "0").replace("{token}", "t")
        response = await docs_relay.client.request("DELETE", url, headers=docs_relay.auth())
        assert response.status_code == 405, (path, response.status_code)
        body = response.json()
        if path.startswith(("/v1/draw/", "/v1/video/")):  # GrsAI's paths: GrsAI's shape
            assert body == {"code": -1, "msg": "method not allowed", "data": None}
        else:
            assert body["error"]["code"] == "method_not_allowed"
        sent = {m.strip() for m in response.headers.get("allow", "").split(",")}
        if sent != allowed:
            wrong[path] = f"Allow: {response.headers.get('allow')} (documented: {allowed})"
    assert wrong == {}
