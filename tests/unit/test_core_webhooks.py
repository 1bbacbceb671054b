"""GrsAI callbacks through ASGITransport: token auth, limits, raw storage, poll verification."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.domain.credentials import hash_secret
from tests.unit.conftest import MakeRelay, Relay, task_object, wrapped

JSON = dict[str, Any]
URL = "https://file.grsai.test/real.png"
ACK = {"code": 0, "msg": "success"}


async def callback_task(relay: Relay) -> tuple[str, str, str]:
    """Submit a callback-mode task; return (task id, upstream id, callback token)."""
    created = await relay.created()
    return created["id"], created["upstream_id"], relay.grsai.token()


async def outcomes(relay: Relay, task_id: str) -> list[str | None]:
    """The outcomes of a task's stored callback events, oldest first."""
    return [e.outcome for e in await relay.storage.events(task_id) if e.source == "callback"]


async def test_progress_callback_is_acknowledged_and_applied(relay: Relay) -> None:
    """A progress callback answers {"code":0,"msg":"success"} and moves the task to running."""
    task_id, upstream_id, token = await callback_task(relay)
    relay.clock.advance(2.0)
    response = await relay.callback(token, task_object(upstream_id, "running", 40))
    assert response.status_code == 200
    assert response.json() == ACK
    task = await relay.task(task_id)
    assert (task.status, task.progress) == ("running", 40)
    assert task.last_event_at == relay.clock.now()
    assert task.next_poll_at == relay.clock.now() + 58.0  # still more than half a window away
    assert await outcomes(relay, task_id) == ["applied"]
    assert relay.grsai.poll_ids == []  # progress is not verified by polling


async def test_news_moves_the_silence_poll_out_once_it_is_near(relay: Relay) -> None:
    """A callback keeps a poll that is at least half a window away and pushes a nearer one
    out to a whole window, so a task whose callbacks stop is polled within one window."""
    task_id, upstream_id, token = await callback_task(relay)
    submitted = relay.clock.now()
    relay.clock.advance(25.0)
    await relay.callback(token, task_object(upstream_id, "running", 10))
    assert (await relay.task(task_id)).next_poll_at == submitted + 60.0  # 35 s away: kept
    relay.clock.advance(10.0)
    await relay.callback(token, task_object(upstream_id, "running", 20))
    assert (await relay.task(task_id)).next_poll_at == relay.clock.now() + 60.0  # 25 s: moved


async def test_progress_only_rises(relay: Relay) -> None:
    """Repeated and reordered progress callbacks never move progress back."""
    task_id, upstream_id, token = await callback_task(relay)
    for progress in (30, 60, 60, 45):
        response = await relay.callback(token, task_object(upstream_id, "running", progress))
        assert response.status_code == 200
    assert (await relay.task(task_id)).progress == 60
    assert await outcomes(relay, task_id) == ["applied", "applied", "duplicate", "stale"]


def database_bytes(folder: Path) -> bytes:
    """Every byte of every file in `folder` (the database, its WAL and shared memory)."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


async def test_callback_token_is_stored_hashed(relay: Relay, tmp_path: Path) -> None:
    """The task stores the token's hash; the token is nowhere in the database or the API."""
    task_id, _, token = await callback_task(relay)
    task = await relay.task(task_id)
    assert task.token_hash == hash_secret(token)
    assert token not in json.dumps(task.to_json())
    assert token.encode() not in database_bytes(tmp_path)


@pytest.mark.parametrize(
    "token",
    [
        "A" * 43,  # well formed, unknown
        "short",
        "A" * 44,
        "A" * 42 + "%3D",
        "A" * 42 + "%C3%A9",
    ],
)
async def test_unknown_or_malformed_token_is_404_identically(relay: Relay, token: str) -> None:
    """Unknown and malformed tokens get the same 404 body, revealing nothing."""
    _, upstream_id, _ = await callback_task(relay)
    body = task_object(upstream_id, "running", 10)
    reference = await relay.callback("B" * 43, body)
    response = await relay.callback(token, body)
    assert response.status_code == reference.status_code == 404
    assert response.content == reference.content
    assert response.json() == {"error": {"code": "not_found", "message": "not found"}}


async def test_token_of_another_relay_task_only_reaches_its_task(relay: Relay) -> None:
    """A callback reaches exactly the task whose token is in the URL."""
    first_id, first_up, first_token = await callback_task(relay)
    second_id, _, _ = await callback_task(relay)
    assert (await relay.callback(first_token, task_object(first_up, "running", 20))).is_success
    assert (await relay.task(first_id)).progress == 20
    assert (await relay.task(second_id)).progress == 0


async def test_body_over_limit_with_content_length_is_413(make_relay: MakeRelay) -> None:
    """A callback body over webhook_max_body_bytes is 413 when Content-Length says so."""
    relay = await make_relay(webhook_max_body_bytes=512)
    task_id, upstream_id, token = await callback_task(relay)
    body = task_object(upstream_id, "running", 10, padding="x" * 600)
    response = await relay.callback(token, body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert (await relay.task(task_id)).status == "pending"


async def test_streamed_body_over_limit_is_413(make_relay: MakeRelay) -> None:
    """A chunked callback body without Content-Length is cut off at the limit with 413."""
    relay = await make_relay(webhook_max_body_bytes=512)
    task_id, upstream_id, token = await callback_task(relay)
    raw = json.dumps(task_object(upstream_id, "running", 10, padding="x" * 600)).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 100):
            yield raw[start : start + 100]

    response = await relay.client.post(
        f"/webhooks/grsai/{token}", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert (await relay.task(task_id)).status == "pending"


async def test_body_at_limit_is_accepted(make_relay: MakeRelay) -> None:
    """A callback body of exactly webhook_max_body_bytes is read."""
    relay = await make_relay(webhook_max_body_bytes=512)
    _, upstream_id, token = await callback_task(relay)
    raw = json.dumps(task_object(upstream_id, "running", 10, padding="")).encode()
    raw = raw[:-1] + b" " * (512 - len(raw)) + b"}"
    assert len(raw) == 512
    assert (await relay.callback(token, raw)).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"",
        b'{"id": NaN}',
        b"[]",
        b'[{"id": "x", "status": "running"}]',
        b'"running"',
        b"\xff\xfe",
    ],
)
async def test_unreadable_body_is_400_and_stored_rejected(relay: Relay, raw: bytes) -> None:
    """Invalid JSON or a non-object body is 400, stored raw with outcome `rejected`."""
    task_id, _, token = await callback_task(relay)
    response = await relay.callback(token, raw)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    events = await relay.storage.events(task_id)
    assert [(e.source, e.outcome, e.body) for e in events] == [("callback", "rejected", raw)]
    assert (await relay.task(task_id)).status == "pending"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"progress": "50"}, "progress"),
        ({"status": "done"}, "status"),
        ({"status": 1}, "status"),
        ({"results": "https://x.test/a.png"}, "results"),
        ({"id": 42}, "id"),
        ({"status": "succeeded", "results": [{"url": "javascript:alert(1)"}]}, "results[0].url"),
    ],
)
async def test_wrong_field_types_are_400_and_stored_rejected(
    relay: Relay, changes: JSON, field: str
) -> None:
    """A task object with a wrong field is 400 naming it, and stored with outcome `rejected`."""
    task_id, upstream_id, token = await callback_task(relay)
    body = {**task_object(upstream_id, "running", 10), **changes}
    response = await relay.callback(token, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_payload"
    assert error["fields"][0]["field"] == field
    assert await outcomes(relay, task_id) == ["rejected"]
    assert relay.grsai.poll_ids == []


async def test_id_of_another_task_is_400_rejected(relay: Relay) -> None:
    """A callback naming another upstream id is 400 and stored rejected; the task is untouched."""
    task_id, _, token = await callback_task(relay)
    _, other_upstream, _ = await callback_task(relay)
    response = await relay.callback(token, task_object(other_upstream, "succeeded", 100, [URL]))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_payload"
    assert await outcomes(relay, task_id) == ["rejected"]
    assert (await relay.task(task_id)).status == "pending"
    assert relay.grsai.poll_ids == []


async def test_terminal_callback_verified_by_poll_is_applied(relay: Relay) -> None:
    """A succeeded callback that a poll confirms is applied with its results."""
    task_id, upstream_id, token = await callback_task(relay)
    relay.grsai.succeed(upstream_id, URL)
    relay.clock.advance(30.0)
    response = await relay.callback(token, task_object(upstream_id, "succeeded", 100, [URL]))
    assert response.status_code == 200
    assert response.json() == ACK
    assert relay.grsai.poll_ids == [upstream_id]
    task = await relay.task(task_id)
    assert task.status == "succeeded"
    assert [(r["upstream_url"], r["url"], r["asset"]["status"]) for r in task.results] == [
        (URL, None, "pending")
    ]
    assert task.completed_at == relay.clock.now()
    assert task.next_poll_at is None
    events = await relay.storage.events(task_id)
    assert [(e.outcome, e.detail) for e in events] == [
        ("applied", "terminal state confirmed by poll")
    ]


async def test_verification_reads_unwrapped_poll_answer(relay: Relay) -> None:
    """Verification accepts the bare (unwrapped) poll answer shape too."""
    task_id, upstream_id, token = await callback_task(relay)
    truth = task_object(upstream_id, "succeeded", 100, [URL])

    async def bare(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=truth)

    relay.grsai.on_poll = bare
    assert (await relay.callback(token, truth)).status_code == 200
    assert (await relay.task(task_id)).status == "succeeded"


async def test_failed_callback_verified_is_applied(relay: Relay) -> None:
    """A failed callback confirmed by poll fails the task with GrsAI's reason."""
    task_id, upstream_id, token = await callback_task(relay)
    truth = task_object(upstream_id, "failed", 0, failure_reason="output_moderation", error="no")
    relay.grsai.tasks[upstream_id] = truth
    assert (await relay.callback(token, truth)).status_code == 200
    task = await relay.task(task_id)
    assert (task.status, task.failure_reason, task.error) == ("failed", "output_moderation", "no")


async def test_forged_terminal_is_not_believed(relay: Relay) -> None:
    """A succeeded callback while GrsAI says running does not finish the task."""
    task_id, upstream_id, token = await callback_task(relay)
    relay.grsai.tasks[upstream_id] = task_object(upstream_id, "running", 20)
    forged = task_object(upstream_id, "succeeded", 100, ["https://evil.test/x.png"])
    response = await relay.callback(token, forged)
    assert response.status_code == 200
    task = await relay.task(task_id)
    assert task.status != "succeeded"
    assert task.results == []
    assert (task.status, task.progress) == ("running", 20)  # the poll's truth is kept
    events = await relay.storage.events(task_id)
    assert [e.outcome for e in events] == ["rejected"]
    assert events[0].detail is not None
    assert "not believed" in events[0].detail


async def test_forged_urls_are_replaced_by_polled_ones(relay: Relay) -> None:
    """A succeeded callback with fake URLs stores the URLs GrsAI reports, not the callback's."""
    task_id, upstream_id, token = await callback_task(relay)
    relay.grsai.succeed(upstream_id, URL)
    forged = task_object(upstream_id, "succeeded", 100, ["https://evil.test/x.png"])
    assert (await relay.callback(token, forged)).status_code == 200
    task = await relay.task(task_id)
    assert task.status == "succeeded"
    assert [(r["upstream_url"], r["url"], r["asset"]["status"]) for r in task.results] == [
        (URL, None, "pending")
    ]
    events = await relay.storage.events(task_id)
    assert [e.outcome for e in events] == ["rejected"]
    assert events[0].body == json.dumps(forged).encode()


async def test_forged_failure_is_replaced_by_polled_success(relay: Relay) -> None:
    """A failed callback for a task GrsAI says succeeded stores the success."""
    task_id, upstream_id, token = await callback_task(relay)
    relay.grsai.succeed(upstream_id, URL)
    forged = task_object(upstream_id, "failed", 0, failure_reason="error")
    assert (await relay.callback(token, forged)).status_code == 200
    assert (await relay.task(task_id)).status == "succeeded"


@pytest.mark.parametrize("mode", ["connect", "timeout", "http500", "not_found"])
async def test_unverifiable_terminal_is_deferred(relay: Relay, mode: str) -> None:
    """When the poll cannot confirm, the callback is stored `deferred` and a poll is due now."""
    task_id, upstream_id, token = await callback_task(relay)

    async def unreachable(request: httpx.Request) -> httpx.Response:
        if mode == "connect":
            raise httpx.ConnectError("refused", request=request)
        if mode == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if mode == "http500":
            return httpx.Response(500)
        return httpx.Response(200, json=wrapped(None, -22, "not found"))

    relay.grsai.on_poll = unreachable
    relay.clock.advance(5.0)
    body = task_object(upstream_id, "succeeded", 100, [URL])
    response = await relay.callback(token, body)
    assert response.status_code == 200
    task = await relay.task(task_id)
    assert task.status == "pending"
    assert task.next_poll_at == relay.clock.now()
    events = await relay.storage.events(task_id)
    assert [(e.outcome, e.body) for e in events] == [("deferred", json.dumps(body).encode())]


async def test_deferred_callback_is_settled_by_the_poller(relay: Relay) -> None:
    """After a deferred callback the next poller round confirms the task."""
    task_id, upstream_id, token = await callback_task(relay)

    async def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    relay.grsai.on_poll = down
    await relay.callback(token, task_object(upstream_id, "succeeded", 100, [URL]))
    relay.grsai.on_poll = None
    relay.grsai.succeed(upstream_id, URL)
    assert await relay.poller.run_once() == 1
    assert (await relay.task(task_id)).status == "succeeded"


async def test_unverified_mode_applies_terminal_directly(make_relay: MakeRelay) -> None:
    """With verify_callbacks=False a terminal callback is applied without polling."""
    relay = await make_relay(verify_callbacks=False)
    task_id, upstream_id, token = await callback_task(relay)
    response = await relay.callback(token, task_object(upstream_id, "succeeded", 100, [URL]))
    assert response.status_code == 200
    assert relay.grsai.poll_ids == []
    task = await relay.task(task_id)
    assert task.status == "succeeded"
    assert [(r["upstream_url"], r["url"], r["asset"]["status"]) for r in task.results] == [
        (URL, None, "pending")
    ]
    assert await outcomes(relay, task_id) == ["applied"]


async def test_callbacks_after_terminal_change_nothing(relay: Relay) -> None:
    """Duplicate, late and contradicting callbacks after the task finished change nothing."""
    task_id, upstream_id, token = await callback_task(relay)
    relay.grsai.succeed(upstream_id, URL)
    final = task_object(upstream_id, "succeeded", 100, [URL])
    assert (await relay.callback(token, final)).status_code == 200
    done = (await relay.task(task_id)).to_json()
    polls = len(relay.grsai.poll_ids)

    relay.clock.advance(10.0)
    late = [
        final,
        task_object(upstream_id, "running", 99),
        task_object(upstream_id, "failed", 0, failure_reason="error"),
        task_object(upstream_id, "succeeded", 100, ["https://evil.test/x.png"]),
    ]
    for body in late:
        response = await relay.callback(token, body)
        assert response.status_code == 200
        assert response.json() == ACK
    assert (await relay.task(task_id)).to_json() == done
    assert len(relay.grsai.poll_ids) == polls  # no verification poll for a finished task
    assert await outcomes(relay, task_id) == ["applied", "duplicate", "stale", "stale", "duplicate"]


async def test_every_callback_is_stored_raw(relay: Relay) -> None:
    """Every callback reaching a task is stored with its exact bytes, in arrival order."""
    task_id, upstream_id, token = await callback_task(relay)
    relay.grsai.succeed(upstream_id, URL)
    bodies = [
        json.dumps(task_object(upstream_id, "running", 10)).encode(),
        b'{"id": "%s", "status": "running", "progress": 20, "extra": "\xc3\xa9"}'
        % upstream_id.encode(),
        b"garbage \x00",
        b'  {"id":"%s","status":"succeeded","progress":100,"results":[{"url":"%s"}]}\n'
        % (upstream_id.encode(), URL.encode()),
        json.dumps(task_object(upstream_id, "running", 30)).encode(),
    ]
    for raw in bodies:
        await relay.callback(token, raw)
    events = await relay.storage.events(task_id)
    assert [e.body for e in events] == bodies
    assert [e.source for e in events] == ["callback"] * len(bodies)
    assert [e.outcome for e in events] == ["applied", "applied", "rejected", "applied", "stale"]
    assert all(isinstance(e.body, bytes) for e in events)


async def test_callback_before_submit_returns_binds_upstream_id(relay: Relay) -> None:
    """A callback arriving while the submit is still in flight binds GrsAI's id to the task."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        return httpx.Response(200, json=wrapped({"id": "16-early"}))

    relay.grsai.on_submit = slow
    submit = asyncio.create_task(relay.submit())
    async with asyncio.timeout(5):
        await entered.wait()
    token = relay.grsai.token()
    response = await relay.callback(token, task_object("16-early", "running", 15))
    assert response.status_code == 200
    release.set()
    created = (await submit).json()
    task = await relay.task(created["id"])
    assert (task.upstream_id, task.status, task.progress) == ("16-early", "running", 15)
    assert task.submit_state == "submitted"


async def test_concurrent_terminal_callbacks_share_one_poll(relay: Relay) -> None:
    """Simultaneous terminal callbacks for one task are verified by a single poll."""
    task_id, upstream_id, token = await callback_task(relay)
    entered, release = asyncio.Event(), asyncio.Event()
    truth = task_object(upstream_id, "succeeded", 100, [URL])

    async def slow(request: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        return httpx.Response(200, json=wrapped(truth))

    relay.grsai.on_poll = slow
    first = asyncio.create_task(relay.callback(token, truth))
    async with asyncio.timeout(5):
        await entered.wait()
    second = asyncio.create_task(relay.callback(token, truth))
    await asyncio.sleep(0.01)
    release.set()
    responses = await asyncio.gather(first, second)
    assert [r.status_code for r in responses] == [200, 200]
    assert relay.grsai.poll_ids == [upstream_id]
    assert sorted(str(o) for o in await outcomes(relay, task_id)) == ["applied", "duplicate"]
    assert relay.services.ingestor._verifying == {}  # no lock left behind for a finished task


async def test_callbacks_need_no_api_key(relay: Relay) -> None:
    """The webhook is authenticated by its token alone (GrsAI sends no credentials)."""
    _, upstream_id, token = await callback_task(relay)
    response = await relay.client.post(
        f"/webhooks/grsai/{token}", json=task_object(upstream_id, "running", 5)
    )
    assert response.status_code == 200


async def test_get_on_webhook_is_405(relay: Relay) -> None:
    """Only POST is served on the webhook path."""
    _, _, token = await callback_task(relay)
    assert (await relay.client.get(f"/webhooks/grsai/{token}")).status_code == 405
