"""The client API through ASGITransport, with GrsAI faked by httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import Any

import httpx
import pytest

from service.clock import rfc3339
from service.domain.catalog import DEFAULT_MODELS
from tests.unit.conftest import RELAY_URL, FakeGrsai, MakeRelay, Relay, wrapped

JSON = dict[str, Any]
TASK_FIELDS = {
    "id",
    "status",
    "progress",
    "model",
    "upstream_id",
    "input",
    "results",
    "failure_reason",
    "error",
    "metadata",
    "callback_url",
    "callback_format",
    "created_at",
    "updated_at",
    "completed_at",
}
RFC3339_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
WEB_HOOK = re.compile(r"http://relay\.test/webhooks/grsai/[A-Za-z0-9_-]{43}")


def error_of(response: httpx.Response, status: int) -> JSON:
    """Assert `response` is the JSON error shape with `status`; return its `error` object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: JSON = body["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    return error


def answer(data: Any, code: int = 0, msg: str = "success", status: int = 200) -> httpx.Response:
    """A GrsAI answer in its envelope."""
    return httpx.Response(status, json=wrapped(data, code, msg))


# --- submit ---------------------------------------------------------------------------------


async def test_submit_answers_202_with_the_full_task(relay: Relay) -> None:
    """POST /v1/tasks answers 202 with every field of the task representation."""
    response = await relay.submit(
        "nano-banana",
        "a red fox",
        aspectRatio="16:9",
        metadata={"order": 7},
        callback_url="https://client.test/done",
    )
    assert response.status_code == 202
    task = response.json()
    assert set(task) == TASK_FIELDS
    assert re.fullmatch(r"task_[A-Za-z0-9_-]{22}", task["id"])
    assert task["status"] == "pending"
    assert task["progress"] == 0
    assert task["model"] == "nano-banana"
    assert task["upstream_id"] == relay.grsai.issued[0]
    assert task["input"] == {"model": "nano-banana", "prompt": "a red fox", "aspectRatio": "16:9"}
    assert task["results"] == []
    assert task["failure_reason"] is None
    assert task["error"] is None
    assert task["metadata"] == {"order": 7}
    assert task["callback_url"] == "https://client.test/done"
    assert task["created_at"] == task["updated_at"] == rfc3339(relay.clock.now())
    assert RFC3339_Z.fullmatch(task["created_at"])
    assert task["completed_at"] is None


async def test_get_task_matches_submit_answer(relay: Relay) -> None:
    """GET /v1/tasks/{id} returns the same representation the submit answered."""
    created = await relay.created()
    response = await relay.client.get(f"/v1/tasks/{created['id']}", headers=relay.auth())
    assert response.status_code == 200
    assert response.json() == created


async def test_completed_at_is_rfc3339_z(relay: Relay) -> None:
    """A finished task's completed_at is RFC 3339 UTC with milliseconds and a Z."""

    async def refuse(request: httpx.Request) -> httpx.Response:
        return answer(None, -1, "insufficient credits")

    relay.grsai.on_submit = refuse
    relay.clock.advance(0.25)
    response = await relay.submit()
    task_id = error_of(response, 502)["task_id"]
    task = (await relay.client.get(f"/v1/tasks/{task_id}", headers=relay.auth())).json()
    assert RFC3339_Z.fullmatch(task["completed_at"])
    assert task["completed_at"] == rfc3339(relay.clock.now())
    assert task["completed_at"].endswith(".250Z")


async def test_callback_mode_sends_token_web_hook(relay: Relay) -> None:
    """With public_base_url set, GrsAI gets webHook = <public>/webhooks/grsai/<43-char token>."""
    await relay.created("nano-banana", shutProgress=True)
    body = relay.grsai.submit_bodies[0]
    assert WEB_HOOK.fullmatch(body["webHook"])
    assert body == {
        "model": "nano-banana",
        "prompt": "a red fox",
        "shutProgress": True,
        "webHook": body["webHook"],
    }
    assert relay.grsai.submit_headers[0]["authorization"] == "Bearer sk-test"
    assert relay.grsai.submit_headers[0]["content-type"] == "application/json"


async def test_each_task_gets_its_own_token(relay: Relay) -> None:
    """Two tasks get two different callback tokens."""
    await relay.created()
    await relay.created()
    assert relay.grsai.token(0) != relay.grsai.token(1)


async def test_poll_mode_sends_minus_one(poll_relay: Relay) -> None:
    """Without public_base_url, GrsAI gets webHook "-1" (poll mode)."""
    await poll_relay.created()
    assert poll_relay.grsai.submit_bodies[0]["webHook"] == "-1"


async def test_own_fields_are_not_sent_upstream(relay: Relay) -> None:
    """metadata and callback_url stay with the relay; GrsAI never sees them."""
    await relay.created(metadata={"a": 1}, callback_url="https://client.test/x")
    assert set(relay.grsai.submit_bodies[0]) == {"model", "prompt", "webHook"}


@pytest.mark.parametrize(
    ("model", "path", "params"),
    [
        ("gpt-image-2", "/v1/draw/completions", {"variants": 2, "quality": "high"}),
        ("sora-image", "/v1/draw/completions", {"size": "1:1"}),
        ("nano-banana-pro", "/v1/draw/nano-banana", {"imageSize": "4K"}),
        ("flux-kontext-max", "/v1/draw/flux", {"urls": ["https://img.test/a.png"]}),
        ("sora-2", "/v1/video/sora-video", {"duration": 10, "remixTargetId": "s_1"}),
        ("veo3.1-fast", "/v1/video/veo", {"firstFrameUrl": "https://img.test/f.png"}),
    ],
)
async def test_model_picks_its_endpoint(relay: Relay, model: str, path: str, params: JSON) -> None:
    """Each model family is submitted to its own GrsAI path with its own parameters."""
    task = await relay.created(model, **params)
    assert relay.grsai.submit_paths == [path]
    assert relay.grsai.submit_bodies[0] == {
        "model": model,
        "prompt": "a red fox",
        **params,
        "webHook": relay.grsai.web_hook(),
    }
    stored = await relay.task(task["id"])
    assert stored.endpoint == path


async def test_every_catalogued_model_is_accepted(relay: Relay) -> None:
    """Every model of the default catalog submits to its documented path."""
    for model in DEFAULT_MODELS:
        await relay.created(model)
    assert relay.grsai.submit_paths == list(DEFAULT_MODELS.values())


async def test_unknown_model_is_422_naming_known_models(relay: Relay) -> None:
    """An unknown model is refused with 422 and the list of known models."""
    error = error_of(await relay.submit("dall-e-3"), 422)
    assert error["code"] == "validation_failed"
    assert error["fields"] == [{"field": "model", "message": "unknown model"}]
    assert error["known_models"] == sorted(DEFAULT_MODELS)
    assert "nano-banana" in error["message"]
    assert "'dall-e-3'" in error["message"]
    assert relay.grsai.submits == 0


async def test_wrong_types_are_422_listing_fields(relay: Relay) -> None:
    """Wrongly typed fields are refused with 422 naming each one; nothing is coerced."""
    body = {
        "model": "nano-banana",
        "prompt": 5,
        "urls": "https://img.test/a.png",
        "shutProgress": "true",
        "metadata": [1],
    }
    response = await relay.client.post("/v1/tasks", json=body, headers=relay.auth())
    error = error_of(response, 422)
    assert error["code"] == "validation_failed"
    assert {f["field"] for f in error["fields"]} == {"prompt", "urls", "shutProgress", "metadata"}
    assert relay.grsai.submits == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x"}, "model"),
        ({"model": "nano-banana"}, "prompt"),
        ({"model": "nano-banana", "prompt": ""}, "prompt"),
        ({"model": "gpt-image-2", "prompt": "x", "variants": 3}, "variants"),
        ({"model": "nano-banana", "prompt": "x", "callback_url": "ftp://a.test/"}, "callback_url"),
        (
            {"model": "nano-banana", "prompt": "x", "callback_url": "https://u:p@a.test/"},
            "callback_url",
        ),
        ({"model": "nano-banana", "prompt": "x", "colour": "red"}, "colour"),
        ({"model": "nano-banana", "prompt": "x", "callback_format": "grsai"}, "callback_format"),
        (
            {
                "model": "nano-banana",
                "prompt": "x",
                "callback_url": "https://a.test/",
                "callback_format": "xml",
            },
            "callback_format",
        ),
    ],
)
async def test_invalid_fields_are_422(relay: Relay, body: JSON, field: str) -> None:
    """Missing, empty, out-of-range and unknown fields are refused naming the field."""
    response = await relay.client.post("/v1/tasks", json=body, headers=relay.auth())
    error = error_of(response, 422)
    assert field in {f["field"] for f in error["fields"]}


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("nano-banana", "duration"),
        ("flux-kontext-pro", "variants"),
        ("sora-2", "urls"),
        ("veo3.1-pro", "url"),
        ("gpt-image-2", "imageSize"),
    ],
)
async def test_parameter_of_another_endpoint_is_422(relay: Relay, model: str, field: str) -> None:
    """A GrsAI parameter the model's endpoint does not take is refused naming it."""
    values: JSON = {
        "duration": 10,
        "variants": 1,
        "urls": ["https://img.test/a.png"],
        "url": "https://img.test/a.png",
        "imageSize": "2K",
    }
    error = error_of(await relay.submit(model, **{field: values[field]}), 422)
    assert error["fields"] == [{"field": field, "message": error["fields"][0]["message"]}]
    assert "not a parameter of" in error["fields"][0]["message"]
    assert relay.grsai.submits == 0


async def test_web_hook_in_body_is_422(relay: Relay) -> None:
    """A client may not set webHook: the relay owns it."""
    error = error_of(await relay.submit(webHook="http://evil.test/"), 422)
    assert error["fields"] == [{"field": "webHook", "message": "not allowed"}]
    assert relay.grsai.submits == 0


async def test_metadata_over_limit_is_422(make_relay: MakeRelay) -> None:
    """Metadata larger than metadata_max_bytes is refused."""
    relay = await make_relay(metadata_max_bytes=64)
    error = error_of(await relay.submit(metadata={"k": "v" * 100}), 422)
    assert error["fields"][0]["field"] == "metadata"


@pytest.mark.parametrize("raw", [b"not json", b"{", b'{"model": NaN}', b"", b'{"a":1,"a":2}'])
async def test_non_json_body_is_400(relay: Relay, raw: bytes) -> None:
    """A body that is not strict JSON is 400 invalid_json."""
    response = await relay.client.post(
        "/v1/tasks",
        content=raw,
        headers={**relay.auth(), "Content-Type": "application/json"},
    )
    assert error_of(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize("body", [[{"model": "nano-banana", "prompt": "x"}], "x", 1, None])
async def test_non_object_json_is_400(relay: Relay, body: Any) -> None:
    """A JSON array or scalar body is 400 invalid_json."""
    response = await relay.client.post("/v1/tasks", json=body, headers=relay.auth())
    assert error_of(response, 400)["code"] == "invalid_json"


async def test_non_json_content_type_is_415(relay: Relay) -> None:
    """A form-encoded body is 415."""
    response = await relay.client.post(
        "/v1/tasks", data={"model": "nano-banana"}, headers=relay.auth()
    )
    assert error_of(response, 415)["code"] == "unsupported_media_type"


async def test_body_over_api_limit_is_413(make_relay: MakeRelay) -> None:
    """A body over api_max_body_bytes is 413."""
    relay = await make_relay(api_max_body_bytes=100)
    error = error_of(await relay.submit(prompt="x" * 200), 413)
    assert error["limit"] == 100


def lenient_client(relay: Relay) -> httpx.AsyncClient:
    """A client that turns unhandled app exceptions into the 500 a real server would send."""
    transport = httpx.ASGITransport(app=relay.asgi, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://relay.test")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"nano-banana","prompt":"fox","metadata":{"note":"\\ud800"}}',
        b'{"model":"nano-banana","prompt":"fox","metadata":{"\\udfff":1}}',
        b'{"model":"sora-2","prompt":"fox","characters":["\\ud83d"]}',
    ],
)
async def test_unpaired_surrogate_is_a_client_error(relay: Relay, raw: bytes) -> None:
    """A JSON string with an unpaired surrogate escape is refused as a 4xx, not a 500."""
    headers = {**relay.auth(), "Content-Type": "application/json"}
    async with lenient_client(relay) as client:
        response = await client.post("/v1/tasks", content=raw, headers=headers)
    assert response.status_code in (400, 422), response.text
    assert relay.grsai.submits == 0


async def test_nesting_at_the_parse_limit_is_not_a_500(relay: Relay) -> None:
    """Metadata nested as deep as the parser allows is accepted or refused, never a 500."""
    headers = {**relay.auth(), "Content-Type": "application/json"}
    async with lenient_client(relay) as client:
        for depth in range(sys.getrecursionlimit(), 0, -1):
            nested = b"[" * depth + b"]" * depth
            raw = b'{"model":"nano-banana","prompt":"x","metadata":{"a":' + nested + b"}}"
            response = await client.post("/v1/tasks", content=raw, headers=headers)
            if response.status_code != 400:
                break
    assert response.status_code in (202, 422), f"depth {depth}: {response.text}"


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic Z3JrXzpwYXNz"},
        {"Authorization": "Bearer grk_" + "A" * 43},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer sk-test"},
    ],
)
async def test_missing_or_unknown_key_is_401(relay: Relay, headers: dict[str, str]) -> None:
    """No key, a malformed key or an unknown key is 401 on every endpoint."""
    for method, path in (("POST", "/v1/tasks"), ("GET", "/v1/tasks"), ("GET", "/v1/tasks/x")):
        response = await relay.client.request(
            method, path, headers=headers, json={"model": "nano-banana", "prompt": "x"}
        )
        assert error_of(response, 401)["code"] == "unauthorized"
    assert relay.grsai.submits == 0


async def test_revoked_key_is_401(relay: Relay) -> None:
    """A revoked key is refused."""
    secret, key_id = await relay.new_key("soon revoked")
    assert (await relay.submit(key=secret)).status_code == 202
    assert await relay.storage.revoke_api_key(key_id, relay.clock.now())
    assert error_of(await relay.submit(key=secret), 401)["code"] == "unauthorized"


async def test_other_keys_task_is_404(relay: Relay) -> None:
    """A task is invisible to every other API key."""
    created = await relay.created()
    other, _ = await relay.new_key("other")
    response = await relay.client.get(f"/v1/tasks/{created['id']}", headers=relay.auth(other))
    assert error_of(response, 404)["code"] == "not_found"
    listed = (await relay.client.get("/v1/tasks", headers=relay.auth(other))).json()
    assert listed == {"data": [], "next_cursor": None}


@pytest.mark.parametrize("task_id", ["task_missing", "x" * 65])
async def test_unknown_task_is_404(relay: Relay, task_id: str) -> None:
    """An unknown (or absurdly long) task id is 404."""
    response = await relay.client.get(f"/v1/tasks/{task_id}", headers=relay.auth())
    assert error_of(response, 404)["code"] == "not_found"


# --- upstream failures ----------------------------------------------------------------------


async def test_upstream_refusal_is_502_and_task_failed(relay: Relay) -> None:
    """GrsAI code -1 ("insufficient credits") is 502 with that message; the task is failed."""

    async def refuse(request: httpx.Request) -> httpx.Response:
        return answer(None, -1, "insufficient credits")

    relay.grsai.on_submit = refuse
    error = error_of(await relay.submit(), 502)
    assert error["code"] == "upstream_rejected"
    assert error["message"] == "insufficient credits"
    stored = await relay.task(error["task_id"])
    assert stored.status == "failed"
    assert stored.submit_state == "failed"
    assert stored.failure_reason == "submit_rejected"
    assert stored.error == "insufficient credits"
    assert stored.next_poll_at is None


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, {"code": 401, "msg": "invalid api key"}, "invalid api key"),
        (429, {"error": "rate limited"}, "rate limited"),
    ],
)
async def test_upstream_refusals_are_502(
    relay: Relay, status: int, body: JSON, message: str
) -> None:
    """HTTP 401 and 429 from GrsAI are 502 upstream_rejected; the task is failed."""

    async def fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    relay.grsai.on_submit = fail
    error = error_of(await relay.submit(), 502)
    assert error["code"] == "upstream_rejected"
    assert error["message"] == message
    stored = await relay.task(error["task_id"])
    assert (stored.status, stored.failure_reason) == ("failed", "submit_rejected")


async def test_a_refused_submit_is_failed_by_the_state_machine_with_its_event(relay: Relay) -> None:
    """A refusal fails the task through the state machine: a `submit` event records why, and no
    callback is queued (the client heard it in the answer)."""

    async def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": -1, "msg": "insufficient credits"})

    relay.grsai.on_submit = refuse
    response = await relay.submit(callback_url="https://client.test/done")
    error = error_of(response, 502)
    events = await relay.storage.events(error["task_id"])
    assert [(e.source, e.outcome, e.detail, e.body) for e in events] == [
        ("submit", "applied", "submit_rejected", b"insufficient credits")
    ]
    assert await relay.storage.deliveries_of(error["task_id"]) == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_upstream_5xx_at_submit_is_outcome_unknown(relay: Relay, status: int) -> None:
    """A 5xx may come from a gateway after GrsAI took the task: 503; the task awaits recovery."""

    async def fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text="<html>oops</html>")

    relay.grsai.on_submit = fail
    error = error_of(await relay.submit(), 503)
    assert error["code"] == "upstream_outcome_unknown"
    stored = await relay.task(error["task_id"])
    assert (stored.status, stored.submit_state) == ("pending", "submitting")
    assert stored.next_poll_at is not None  # the poller fails it if no callback recovers it


async def test_upstream_5xx_in_poll_mode_fails_at_once(poll_relay: Relay) -> None:
    """In poll mode nothing could recover the task, so a 5xx fails it as submit_outcome_unknown."""

    async def fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="bad gateway")

    poll_relay.grsai.on_submit = fail
    error = error_of(await poll_relay.submit(), 503)
    stored = await poll_relay.task(error["task_id"])
    assert (stored.status, stored.failure_reason) == ("failed", "submit_outcome_unknown")


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, text="<html>gateway</html>"),
        httpx.Response(200, json=[1]),
        httpx.Response(200, json={"code": 0, "msg": "success", "data": {}}),
        httpx.Response(200, json={"code": 0, "msg": "success", "data": {"id": 5}}),
    ],
)
async def test_unreadable_submit_answer_is_502(relay: Relay, reply: httpx.Response) -> None:
    """A 200 answer without a usable task id is 502 upstream_protocol_error."""

    async def garble(request: httpx.Request) -> httpx.Response:
        return reply

    relay.grsai.on_submit = garble
    error = error_of(await relay.submit(), 502)
    assert error["code"] == "upstream_protocol_error"


async def test_connect_error_is_503_and_releases_idempotency_key(relay: Relay) -> None:
    """GrsAI unreachable is 503; the Idempotency-Key is released so a retry submits again."""

    async def refuse_connection(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    relay.grsai.on_submit = refuse_connection
    first = await relay.submit(idempotency_key="order-1")
    error = error_of(first, 503)
    assert error["code"] == "upstream_unavailable"
    assert first.headers["retry-after"] == "1"
    failed = await relay.task(error["task_id"])
    assert (failed.status, failed.failure_reason) == ("failed", "upstream_unavailable")
    assert failed.idempotency_key is None

    relay.grsai.on_submit = None
    tries = relay.grsai.submits
    retry = await relay.submit(idempotency_key="order-1")
    assert retry.status_code == 202
    assert retry.json()["id"] != error["task_id"]
    assert relay.grsai.submits == tries + 1
    again = await relay.submit(idempotency_key="order-1")
    assert again.json()["id"] == retry.json()["id"]
    assert relay.grsai.submits == tries + 1


async def test_read_timeout_in_poll_mode_fails_task(poll_relay: Relay) -> None:
    """A read timeout in poll mode is 503 and the task fails as submit_outcome_unknown."""

    async def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    poll_relay.grsai.on_submit = hang
    response = await poll_relay.submit()
    error = error_of(response, 503)
    assert error["code"] == "upstream_timeout"
    assert response.headers["retry-after"] == "1"
    stored = await poll_relay.task(error["task_id"])
    assert stored.status == "failed"
    assert stored.failure_reason == "submit_outcome_unknown"
    assert stored.next_poll_at is None


async def test_read_timeout_in_callback_mode_keeps_task_recoverable(relay: Relay) -> None:
    """A read timeout in callback mode leaves the task pending: its first callback may come."""

    async def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    relay.grsai.on_submit = hang
    error = error_of(await relay.submit(), 503)
    stored = await relay.task(error["task_id"])
    assert (stored.status, stored.submit_state, stored.upstream_id) == (
        "pending",
        "submitting",
        None,
    )
    assert stored.next_poll_at == relay.clock.now() + 300.0


# --- idempotency ----------------------------------------------------------------------------


async def test_same_key_same_body_is_one_task(relay: Relay) -> None:
    """The same Idempotency-Key and body return the same task; GrsAI sees one submit."""
    first = await relay.submit(idempotency_key="k-1", aspectRatio="1:1")
    second = await relay.submit(idempotency_key="k-1", aspectRatio="1:1")
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert relay.grsai.submits == 1


async def test_accepted_task_has_its_location_and_no_replay_mark(relay: Relay) -> None:
    """A first 202 carries `Location` (absolute under PUBLIC_BASE_URL) and no replay header."""
    response = await relay.submit(idempotency_key="k-loc")
    assert response.status_code == 202
    assert response.headers["location"] == f"{RELAY_URL}/v1/tasks/{response.json()['id']}"
    assert "idempotent-replayed" not in response.headers


async def test_location_is_a_path_without_public_base_url(poll_relay: Relay) -> None:
    """Without PUBLIC_BASE_URL the 202's `Location` is the task's path."""
    response = await poll_relay.submit()
    assert response.headers["location"] == f"/v1/tasks/{response.json()['id']}"


async def test_replay_is_marked_idempotent_replayed(relay: Relay) -> None:
    """A replay answers the same task with `Idempotent-Replayed: true` and the same Location."""
    first = await relay.submit(idempotency_key="k-replay")
    second = await relay.submit(idempotency_key="k-replay")
    assert second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == first.headers["location"]


async def test_same_key_reordered_body_is_the_same_request(relay: Relay) -> None:
    """Key order and spacing do not change a request's identity."""
    headers = {**relay.auth(), "Idempotency-Key": "k-2", "Content-Type": "application/json"}
    a = b'{"model":"nano-banana","prompt":"fox","aspectRatio":"1:1"}'
    b = b'{ "aspectRatio" : "1:1", "prompt" : "fox", "model" : "nano-banana" }'
    first = await relay.client.post("/v1/tasks", content=a, headers=headers)
    second = await relay.client.post("/v1/tasks", content=b, headers=headers)
    assert first.json()["id"] == second.json()["id"]
    assert relay.grsai.submits == 1


async def test_same_key_different_body_is_422(relay: Relay) -> None:
    """Reusing an Idempotency-Key with another body is 422 idempotency_key_reused."""
    assert (await relay.submit(prompt="fox", idempotency_key="k-3")).status_code == 202
    error = error_of(await relay.submit(prompt="cat", idempotency_key="k-3"), 422)
    assert error["code"] == "idempotency_key_reused"
    assert relay.grsai.submits == 1


async def test_idempotency_keys_are_per_api_key(relay: Relay) -> None:
    """Two API keys using the same Idempotency-Key get two tasks."""
    other, _ = await relay.new_key("other")
    first = await relay.submit(idempotency_key="shared")
    second = await relay.submit(idempotency_key="shared", key=other)
    assert first.json()["id"] != second.json()["id"]
    assert relay.grsai.submits == 2


async def test_replayed_rejection_is_502_again(relay: Relay) -> None:
    """A retry of a request GrsAI refused answers the same refusal without submitting again."""

    async def refuse(request: httpx.Request) -> httpx.Response:
        return answer(None, -1, "insufficient credits")

    relay.grsai.on_submit = refuse
    first = error_of(await relay.submit(idempotency_key="k-4"), 502)
    relay.grsai.on_submit = None
    replayed = await relay.submit(idempotency_key="k-4")
    assert error_of(replayed, 502) == first
    assert replayed.headers["idempotent-replayed"] == "true"
    assert relay.grsai.submits == 1


@pytest.mark.parametrize("key", ["", "a" * 256, "has space", "tab\there", "ünïcode"])
async def test_bad_idempotency_key_is_400(relay: Relay, key: str) -> None:
    """An Idempotency-Key that is not 1-255 printable ASCII characters is refused."""
    headers = {**relay.auth(), "Idempotency-Key": key}
    response = await relay.client.post(
        "/v1/tasks",
        json={"model": "nano-banana", "prompt": "x"},
        headers=[(k.encode(), v.encode()) for k, v in headers.items()],
    )
    assert error_of(response, 400)["code"] == "invalid_idempotency_key"
    assert relay.grsai.submits == 0


async def test_concurrent_duplicate_in_flight_is_409(relay: Relay) -> None:
    """A duplicate arriving while the first submit is still in flight is 409."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        return answer({"id": "16-slow"})

    relay.grsai.on_submit = slow
    first = asyncio.create_task(relay.submit(idempotency_key="k-5"))
    async with asyncio.timeout(5):
        await entered.wait()
    error = error_of(await relay.submit(idempotency_key="k-5"), 409)
    assert error["code"] == "idempotency_in_flight"
    release.set()
    done = await first
    assert done.status_code == 202
    assert error["task_id"] == done.json()["id"]
    assert relay.grsai.submits == 1
    replay = await relay.submit(idempotency_key="k-5")
    assert replay.json()["id"] == done.json()["id"]


async def test_concurrent_identical_requests_submit_once(relay: Relay) -> None:
    """Many identical requests at once submit once: one 202, the rest 202 replays or 409."""
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return answer({"id": "16-once"})

    relay.grsai.on_submit = slow
    pending = [asyncio.create_task(relay.submit(idempotency_key="k-6")) for _ in range(10)]
    await asyncio.sleep(0.05)
    release.set()
    responses = await asyncio.gather(*pending)
    codes = sorted(r.status_code for r in responses)
    assert codes.count(202) >= 1
    assert set(codes) <= {202, 409}
    assert relay.grsai.submits == 1
    assert len({r.json()["id"] for r in responses if r.status_code == 202}) == 1


# --- listing --------------------------------------------------------------------------------


async def list_page(relay: Relay, **params: Any) -> JSON:
    """GET /v1/tasks with these query parameters; must be 200."""
    response = await relay.client.get("/v1/tasks", params=params, headers=relay.auth())
    assert response.status_code == 200, response.text
    page: JSON = response.json()
    return page


async def test_pagination_newest_first_without_gaps(relay: Relay) -> None:
    """Pages of 3 walk all 7 tasks newest first with no duplicate or omission."""
    ids = [(await relay.created(prompt=f"p{n}"))["id"] for n in range(7)]
    seen: list[str] = []
    page = await list_page(relay, limit=3)
    pages = 1
    while True:
        seen += [t["id"] for t in page["data"]]
        assert len(page["data"]) <= 3
        if page["next_cursor"] is None:
            break
        page = await list_page(relay, limit=3, cursor=page["next_cursor"])
        pages += 1
    assert seen == ids[::-1]
    assert pages == 3


async def test_pagination_is_stable_under_inserts(relay: Relay) -> None:
    """Tasks created between pages do not shift, repeat or hide older tasks."""
    ids = [(await relay.created(prompt=f"p{n}"))["id"] for n in range(7)]
    first = await list_page(relay, limit=3)
    assert [t["id"] for t in first["data"]] == ids[:3:-1]
    newer = [(await relay.created(prompt=f"new{n}"))["id"] for n in range(2)]
    second = await list_page(relay, limit=3, cursor=first["next_cursor"])
    assert [t["id"] for t in second["data"]] == ids[3:0:-1]
    third = await list_page(relay, limit=3, cursor=second["next_cursor"])
    assert [t["id"] for t in third["data"]] == ids[:1]
    assert third["next_cursor"] is None
    fresh = await list_page(relay, limit=3)
    assert [t["id"] for t in fresh["data"]][:2] == newer[::-1]


async def test_exact_page_has_no_cursor(relay: Relay) -> None:
    """When the last page is exactly full there is no next cursor."""
    for _ in range(3):
        await relay.created()
    page = await list_page(relay, limit=3)
    assert len(page["data"]) == 3
    assert page["next_cursor"] is None


async def test_filters_status_and_model(relay: Relay) -> None:
    """status and model filter the list; combined they intersect."""
    banana = await relay.created("nano-banana")
    flux = await relay.created("flux-pro-1.1")

    async def refuse(request: httpx.Request) -> httpx.Response:
        return answer(None, -1, "insufficient credits")

    relay.grsai.on_submit = refuse
    failed_id = error_of(await relay.submit("nano-banana"), 502)["task_id"]

    def ids(page: JSON) -> list[str]:
        return [t["id"] for t in page["data"]]

    assert ids(await list_page(relay, status="failed")) == [failed_id]
    assert ids(await list_page(relay, status="pending")) == [flux["id"], banana["id"]]
    assert ids(await list_page(relay, model="nano-banana")) == [failed_id, banana["id"]]
    assert ids(await list_page(relay, model="nano-banana", status="pending")) == [banana["id"]]
    assert ids(await list_page(relay, status="succeeded")) == []
    assert ids(await list_page(relay, model="veo3.1-pro")) == []


async def test_filtered_pagination(relay: Relay) -> None:
    """Cursor paging works inside a filter."""
    wanted = [(await relay.created("flux-pro-1.1"))["id"]]
    for _ in range(3):
        await relay.created("nano-banana")
        wanted.append((await relay.created("flux-pro-1.1"))["id"])
    first = await list_page(relay, model="flux-pro-1.1", limit=2)
    second = await list_page(relay, model="flux-pro-1.1", limit=2, cursor=first["next_cursor"])
    assert [t["id"] for t in first["data"] + second["data"]] == wanted[::-1]
    assert second["next_cursor"] is None


async def failed_and_pending(relay: Relay, failed: int, pending: int) -> list[str]:
    """Interleave `failed` refused submits with `pending` accepted ones; the failed ids, newest
    first."""
    failed_ids: list[str] = []

    async def refuse(request: httpx.Request) -> httpx.Response:
        return answer(None, -1, "insufficient credits")

    for n in range(max(failed, pending)):
        if n < pending:
            relay.grsai.on_submit = None
            await relay.created(prompt=f"ok{n}")
        if n < failed:
            relay.grsai.on_submit = refuse
            failed_ids.append(error_of(await relay.submit(prompt=f"no{n}"), 502)["task_id"])
    relay.grsai.on_submit = None
    return failed_ids[::-1]


async def test_cursor_alone_continues_the_filtered_list(relay: Relay) -> None:
    """Following `next_cursor` alone after `?status=failed&limit=2` pages the same filtered list."""
    failed = await failed_and_pending(relay, failed=5, pending=5)
    page = await list_page(relay, status="failed", limit=2)
    seen = [t["id"] for t in page["data"]]
    while page["next_cursor"] is not None:
        page = await list_page(relay, cursor=page["next_cursor"])
        assert len(page["data"]) <= 2, "the cursor keeps the page size too"
        seen += [t["id"] for t in page["data"]]
    assert seen == failed


async def test_cursor_with_the_same_filters_and_another_limit_is_accepted(relay: Relay) -> None:
    """Repeating the cursor's filters is fine, and `limit` may change from page to page."""
    failed = await failed_and_pending(relay, failed=4, pending=2)
    first = await list_page(relay, status="failed", limit=1)
    rest = await list_page(relay, status="failed", limit=10, cursor=first["next_cursor"])
    assert [t["id"] for t in first["data"] + rest["data"]] == failed
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    "other", [{"status": "pending"}, {"model": "nano-banana"}, {"status": "failed", "model": "x"}]
)
async def test_cursor_with_other_filters_is_400(relay: Relay, other: dict[str, str]) -> None:
    """A cursor used with filters other than its own is 400 invalid_cursor, naming its filters."""
    await failed_and_pending(relay, failed=3, pending=1)
    cursor = (await list_page(relay, status="failed", limit=1))["next_cursor"]
    response = await relay.client.get(
        "/v1/tasks", params={**other, "cursor": cursor}, headers=relay.auth()
    )
    error = error_of(response, 400)
    assert error["code"] == "invalid_cursor"
    assert "status=failed" in error["message"]


@pytest.mark.parametrize("limit", ["0", "201", "x", "²", "-1", "1.5", "", "0x10", "٣"])
async def test_bad_limit_is_422(relay: Relay, limit: str) -> None:
    """limit must be an ASCII integer from 1 to 200."""
    response = await relay.client.get("/v1/tasks", params={"limit": limit}, headers=relay.auth())
    error = error_of(response, 422)
    assert error["fields"][0]["field"] == "limit"


@pytest.mark.parametrize("limit", ["1", "200", "007"])
async def test_good_limit_is_accepted(relay: Relay, limit: str) -> None:
    """Limits of 1 to 200 are accepted."""
    await list_page(relay, limit=limit)


@pytest.mark.parametrize("params", [{"status": "done"}, {"status": ""}, {"model": "m" * 101}])
async def test_bad_filters_are_422(relay: Relay, params: dict[str, str]) -> None:
    """An unknown status or an over-long model filter is 422."""
    response = await relay.client.get("/v1/tasks", params=params, headers=relay.auth())
    error_of(response, 422)


@pytest.mark.parametrize(
    "cursor",
    ["garbage!", "djI6NQ", "djE6LTU", "djE6YQ", "é", "djE6" + "MTIzNDU2Nzg5" * 3, "%%%"],
)
async def test_bad_cursor_is_400(relay: Relay, cursor: str) -> None:
    """A cursor this API did not issue is 400 invalid_cursor."""
    response = await relay.client.get("/v1/tasks", params={"cursor": cursor}, headers=relay.auth())
    assert error_of(response, 400)["code"] == "invalid_cursor"


# --- health ---------------------------------------------------------------------------------


async def test_healthz(relay: Relay) -> None:
    """/healthz answers 200 ok without authentication."""
    response = await relay.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_ready_with_poller(make_relay: MakeRelay) -> None:
    """/readyz is 200 when the database answers, the poller and copier run and the file store
    (here the folder ASSET_DIR) is writable."""
    relay = await make_relay(run_poller=True)
    response = await relay.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {
            "database": {"status": "ok"},
            "settings": {"status": "ok", "mode": "callback"},
            "poller": {"status": "ok"},
            "copier": {"status": "ok"},
            "deliverer": {"status": "ok"},
            "asset_store": {"status": "ok"},
            "public_url": {"status": "ok", "url": "http://relay.test", "probe": "off"},
            "callbacks": {"status": "ok", "last_callback": "none yet"},
            "http_grsai": {"status": "ok", "in_use": "0/64"},
            "http_downloads": {"status": "ok", "in_use": "0/16"},
            "http_deliveries": {"status": "ok", "in_use": "0/32"},
        },
    }


async def test_readyz_not_ready_without_poller(poll_relay: Relay) -> None:
    """/readyz is 503 naming the poller when it does not run."""
    response = await poll_relay.client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["poller"] == {"status": "failing"}
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["settings"]["mode"] == "poll"


async def test_unknown_route_and_method_are_json_errors(relay: Relay) -> None:
    """Unknown paths are 404 and wrong methods 405, both in the JSON error shape."""
    assert error_of(await relay.client.get("/nope"), 404)["code"] == "not_found"
    response = await relay.client.delete("/v1/tasks")
    assert error_of(response, 405)["code"] == "method_not_allowed"


async def test_fake_grsai_records_json_bodies() -> None:
    """The fake GrsAI decodes what the relay sends (sanity check of the test double)."""
    fake = FakeGrsai()
    request = httpx.Request("POST", "http://grsai.test/v1/draw/flux", json={"model": "m"})
    response = await fake.handle(request)
    assert json.loads(response.content)["data"]["id"] == fake.issued[0]
    assert fake.submit_bodies == [{"model": "m"}]
