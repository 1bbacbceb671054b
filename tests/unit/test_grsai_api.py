"""GrsAI's own API on the relay: submit paths, `/v1/draw/result` and GrsAI's error shapes.

Driven through `httpx.ASGITransport` against a fake GrsAI (`conftest.FakeGrsai`).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.domain.catalog import ENDPOINTS
from tests.unit.conftest import JSON, MakeRelay, Relay, wrapped

NANO = "/v1/draw/nano-banana"


async def grsai_post(
    relay: Relay, path: str, body: JSON | bytes, key: str | None = None, **headers: str
) -> httpx.Response:
    """POST to a GrsAI path with the caller's key (or `key`) as GrsAI's clients do."""
    sent = {"Content-Type": "application/json", **relay.auth(key), **headers}
    if isinstance(body, bytes):
        return await relay.client.post(path, content=body, headers=sent)
    return await relay.client.post(path, json=body, headers=sent)


async def submit_poll(relay: Relay, key: str | None = None, **fields: Any) -> str:
    """Submit in poll mode (`webHook: "-1"`); return the task id from GrsAI's answer."""
    body = {"model": "nano-banana", "prompt": "a red fox", "webHook": "-1", **fields}
    response = await grsai_post(relay, NANO, body, key)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["code"] == 0
    assert answer["msg"] == "success"
    task_id: str = answer["data"]["id"]
    return task_id


async def poll(relay: Relay, task_id: str, key: str | None = None) -> httpx.Response:
    """`POST /v1/draw/result` with `{"id": task_id}`."""
    return await grsai_post(relay, "/v1/draw/result", {"id": task_id}, key)


def grsai_error(response: httpx.Response, status: int, code: int = -1) -> str:
    """Assert GrsAI's error shape with this HTTP status and code; return `msg`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "msg", "data"}, body
    assert body["data"] is None, body
    assert body["code"] == code, body
    msg: str = body["msg"]
    return msg


async def test_poll_mode_answers_the_relay_task_id(relay: Relay) -> None:
    """`webHook: "-1"` answers `{"code":0,"data":{"id"}}` with an ordinary relay task's id."""
    task_id = await submit_poll(relay, aspectRatio="16:9")
    native = await relay.client.get(f"/v1/tasks/{task_id}", headers=relay.auth())
    assert native.status_code == 200
    assert native.json()["input"] == {
        "model": "nano-banana",
        "prompt": "a red fox",
        "aspectRatio": "16:9",
    }
    assert relay.grsai.submit_paths == [NANO]


async def test_unknown_fields_are_left_out(relay: Relay) -> None:
    """Fields the path does not take never reach GrsAI (GrsAI ignores them too)."""
    await submit_poll(relay, cdn="x", duration=10, aspectRatio="")
    sent = relay.grsai.submit_bodies[-1]
    assert "cdn" not in sent
    assert "duration" not in sent
    assert "aspectRatio" not in sent


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.family for e in ENDPOINTS])
async def test_every_submit_path_takes_its_own_models(relay: Relay, endpoint: Any) -> None:
    """Each GrsAI path accepts a model of its own and refuses one of another path."""
    models = relay.services.settings.catalog().models
    own = next(m for m in models if _path(relay, m) == endpoint.path)
    other = next(m for m in models if _path(relay, m) != endpoint.path)
    body = {"model": own, "prompt": "a cat", "webHook": "-1"}
    assert (await grsai_post(relay, endpoint.path, body)).json()["code"] == 0
    refused = await grsai_post(relay, endpoint.path, {**body, "model": other})
    assert endpoint.path in grsai_error(refused, 422)


def _path(relay: Relay, model: str) -> str:
    found = relay.services.settings.catalog().endpoint(model)
    assert found is not None
    return found.path


async def test_result_is_answered_from_the_database(relay: Relay) -> None:
    """Polling never calls GrsAI: the answer is the stored task in GrsAI's shape."""
    task_id = await submit_poll(relay)
    before = list(relay.grsai.poll_ids)
    for _ in range(3):
        answer = (await poll(relay, task_id)).json()
        assert answer["code"] == 0
        assert answer["msg"] == "success"
        assert answer["data"]["id"] == task_id
        assert answer["data"]["status"] == "running"
        assert answer["data"]["results"] is None
    assert relay.grsai.poll_ids == before


async def test_result_shows_the_finished_task(make_relay: MakeRelay) -> None:
    """After GrsAI reports success the poll answer carries `results[].url` and `url`."""
    relay = await make_relay(mirror_results=False)
    task_id = await submit_poll(relay)
    upstream = (await relay.task(task_id)).upstream_id
    assert upstream is not None
    answer = relay.grsai.succeed(upstream, "https://files.example.com/a.png")
    response = await relay.callback(relay.grsai.token(), answer)
    assert response.status_code == 200
    data = (await poll(relay, task_id)).json()["data"]
    assert data["status"] == "succeeded"
    assert data["progress"] == 100
    assert data["results"][0]["url"] == data["url"]


async def test_failed_task_carries_reason_and_error(relay: Relay) -> None:
    """A moderated task reads as GrsAI's `failed` with `failure_reason` and `error`."""
    task_id = await submit_poll(relay)
    upstream = (await relay.task(task_id)).upstream_id
    assert upstream is not None
    failed = {
        "id": upstream,
        "status": "failed",
        "progress": 0,
        "results": None,
        "failure_reason": "output_moderation",
        "error": "blocked",
    }
    relay.grsai.tasks[upstream] = failed
    await relay.callback(relay.grsai.token(), failed)
    data = (await poll(relay, task_id)).json()["data"]
    assert (data["status"], data["failure_reason"], data["error"]) == (
        "failed",
        "output_moderation",
        "blocked",
    )


async def test_unknown_or_foreign_id_is_minus_22(relay: Relay) -> None:
    """An unknown id, and another key's task, both answer code -22 (HTTP 200, as GrsAI)."""
    task_id = await submit_poll(relay)
    other, _ = await relay.new_key("other")
    assert grsai_error(await poll(relay, task_id, other), 200, -22) == "task not found"
    assert grsai_error(await poll(relay, "task_nope"), 200, -22) == "task not found"
    assert grsai_error(await poll(relay, "x" * 500), 200, -22) == "task not found"


@pytest.mark.parametrize("body", [{}, {"id": ""}, {"id": 7}, {"id": None}])
async def test_result_without_an_id_is_refused(relay: Relay, body: JSON) -> None:
    """A poll body without a string id is GrsAI's error, not a crash."""
    response = await grsai_post(relay, "/v1/draw/result", body)
    assert "id" in grsai_error(response, 422)


@pytest.mark.parametrize("path", [NANO, "/v1/draw/result"])
async def test_missing_or_bad_key_is_401_in_grsai_shape(relay: Relay, path: str) -> None:
    """No key, an unknown key and a non-Bearer scheme are 401 `{"code":-1,...}`."""
    body = {"model": "nano-banana", "prompt": "p", "webHook": "-1", "id": "x"}
    bare = await relay.client.post(path, json=body)
    grsai_error(bare, 401)
    wrong = await relay.client.post(path, json=body, headers={"Authorization": "Bearer sk-nope"})
    grsai_error(wrong, 401)
    basic = await relay.client.post(path, json=body, headers={"Authorization": "Basic eDp5"})
    grsai_error(basic, 401)
    assert relay.grsai.submits == 0


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"prompt": "p", "webHook": "-1"}, 422, "model is required"),
        ({"model": "no-such", "prompt": "p", "webHook": "-1"}, 422, "not supported"),
        ({"model": "nano-banana", "webHook": "-1"}, 422, "prompt"),
        ({"model": "nano-banana", "prompt": " ", "webHook": "-1"}, 422, "prompt"),
        ({"model": "nano-banana", "prompt": "p", "webHook": "ftp://x"}, 400, "webHook"),
        ({"model": "nano-banana", "prompt": "p", "webHook": 5}, 400, "webHook"),
        ({"model": "nano-banana", "prompt": "p", "webHook": "-1", "shutProgress": 1}, 422, "shut"),
        ({"model": "nano-banana", "prompt": "p", "webHook": "-1", "aspectRatio": "7:3"}, 422, ""),
        ({"model": "nano-banana", "prompt": "p", "webHook": "-1", "imageSize": "2K"}, 422, ""),
        ({"model": "nano-banana", "prompt": "p", "webHook": "-1", "urls": "x"}, 422, "urls"),
    ],
)
async def test_bad_bodies_are_grsai_errors(
    relay: Relay, body: JSON, status: int, words: str
) -> None:
    """Bad model or parameters are refused in GrsAI's shape, before anything reaches GrsAI."""
    assert words in grsai_error(await grsai_post(relay, NANO, body), status)
    assert relay.grsai.submits == 0


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b"", 400),
        (b'{"model": "a", "model": "b"}', 400),
        (b"\xff\xfe", 400),
        (b"[" * 10_000 + b"]" * 10_000, 400),
        (b'{"prompt": NaN}', 400),
    ],
)
async def test_hostile_bodies_get_a_precise_4xx(relay: Relay, raw: bytes, status: int) -> None:
    """Malformed bodies on submit and poll paths are GrsAI errors with a 4xx, never a 500."""
    for path in (NANO, "/v1/draw/result"):
        grsai_error(await grsai_post(relay, path, raw), status)


async def test_oversized_and_wrong_type_bodies(make_relay: MakeRelay) -> None:
    """A body over API_MAX_BODY_BYTES is 413 and a non-JSON type 415, both in GrsAI's shape."""
    relay = await make_relay(api_max_body_bytes=1024)
    big = {"model": "nano-banana", "prompt": "p" * 4096, "webHook": "-1"}
    grsai_error(await grsai_post(relay, NANO, big), 413)
    grsai_error(await grsai_post(relay, "/v1/draw/result", {"id": "x" * 4096}), 413)
    form = await grsai_post(relay, NANO, b"model=x", **{"Content-Type": "text/plain"})
    grsai_error(form, 415)


async def test_router_refusals_are_grsai_shaped(relay: Relay) -> None:
    """405 and 404 under GrsAI's paths are GrsAI errors too; elsewhere the relay's own."""
    wrong_method = await relay.client.get("/v1/draw/result", headers=relay.auth())
    assert grsai_error(wrong_method, 405) == "method not allowed"
    assert wrong_method.headers["allow"] == "POST"
    grsai_error(await grsai_post(relay, "/v1/draw/nope", {}), 404)
    elsewhere = await relay.client.get("/v1/nope", headers=relay.auth())
    assert elsewhere.json()["error"]["code"] == "not_found"


async def test_grsai_refusal_is_passed_on_as_grsai_says_it(relay: Relay) -> None:
    """GrsAI's own code -1 (insufficient credits) reaches the client as GrsAI sent it."""

    async def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=wrapped(None, -1, "insufficient credits"))

    relay.grsai.on_submit = refuse
    body = {"model": "nano-banana", "prompt": "p", "webHook": "-1"}
    assert grsai_error(await grsai_post(relay, NANO, body), 200) == "insufficient credits"


@pytest.mark.parametrize(("upstream", "status"), [(429, 429), (401, 502), (500, 503)])
async def test_upstream_http_errors_map_to_grsai_statuses(
    relay: Relay, upstream: int, status: int
) -> None:
    """GrsAI's 429 stays 429; its 401 (the relay's key) is 502; its 5xx is 503."""

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(upstream, json=wrapped(None, -1, "no"))

    relay.grsai.on_submit = answer
    body = {"model": "nano-banana", "prompt": "p", "webHook": "-1"}
    grsai_error(await grsai_post(relay, NANO, body), status)


async def test_rate_limit_is_429_in_grsai_shape(make_relay: MakeRelay) -> None:
    """Over SUBMIT_RATE_PER_MINUTE the submit is 429 with Retry-After, GrsAI-shaped."""
    relay = await make_relay(submit_rate_per_minute=1)
    await submit_poll(relay)
    body = {"model": "nano-banana", "prompt": "p", "webHook": "-1"}
    response = await grsai_post(relay, NANO, body)
    grsai_error(response, 429)
    assert int(response.headers["retry-after"]) > 0


async def test_idempotency_key_replays_the_same_task(relay: Relay) -> None:
    """The same Idempotency-Key and body answer the same id; GrsAI sees one submit."""
    body = {"model": "nano-banana", "prompt": "p", "webHook": "-1"}
    first = await grsai_post(relay, NANO, body, **{"Idempotency-Key": "k1"})
    again = await grsai_post(relay, NANO, body, **{"Idempotency-Key": "k1"})
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert relay.grsai.submits == 1
    changed = await grsai_post(relay, NANO, {**body, "prompt": "q"}, **{"Idempotency-Key": "k1"})
    grsai_error(changed, 422)


async def test_webhook_url_is_the_task_callback_in_grsai_format(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `webHook` URL becomes the task's callback URL, submitted with callback_format grsai."""
    submitter = relay.services.submitter
    formats: list[str] = []
    original = submitter.submit

    async def spy(*args: Any, callback_format: str = "relay") -> Any:
        formats.append(callback_format)
        return await original(*args, callback_format=callback_format)

    monkeypatch.setattr(submitter, "submit", spy)
    hook = "https://client.example.com/grsai/hook"
    body = {"model": "nano-banana", "prompt": "p", "webHook": hook}
    answer = (await grsai_post(relay, NANO, body)).json()
    assert answer["code"] == 0
    assert (await relay.task(answer["data"]["id"])).callback_url == hook
    assert formats == ["grsai"]
