"""Live status in process: the long-poll's answers and validation, and the finished stream
(open streams, heartbeats and shutdown are tested over real HTTP in tests/e2e/test_live.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from service.api.openapi import document_for
from tests.unit.conftest import RELAY_URL, Relay, task_object
from tests.unit.test_openapi import conforms

HANG = 30.0  # a hang guard, never a measure


async def _wait_for_watchers(relay: Relay, count: int) -> None:
    """Until `count` requests watch a task (the long-polls have read it and wait)."""
    # the hub offers no event for this (nothing in the service needs one): look every 5 ms
    async with asyncio.timeout(HANG):
        while relay.services.watch.watchers < count:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def _fail(relay: Relay) -> None:
    """The last task fails upstream and its callback says so (final: nothing to copy)."""
    upstream_id = relay.grsai.issued[-1]
    failed = task_object(upstream_id, "failed", 100, failure_reason="error", error="boom")
    relay.grsai.tasks[upstream_id] = failed  # what the verification poll finds
    ack = await relay.callback(relay.grsai.token(), failed)
    assert ack.status_code == 200, ack.text


@pytest.mark.parametrize("value", ["0", "61", "60.5", "-1", "abc", "1e3", "", "0.0001", "100"])
async def test_bad_wait_is_a_precise_validation_error(relay: Relay, value: str) -> None:
    """`wait` outside 0 < wait <= 60 (or not a number) is 422 naming the `wait` field."""
    task = await relay.created()
    response = await relay.client.get(f"/v1/tasks/{task['id']}?wait={value}", headers=relay.auth())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert error["fields"][0]["field"] == "wait"


async def test_lookup_carries_the_etag_the_long_poll_uses(relay: Relay) -> None:
    """A plain lookup's ETag is the state's fingerprint: a stale one answers the long-poll
    at once with the current state."""
    task = await relay.created()
    plain = await relay.client.get(f"/v1/tasks/{task['id']}", headers=relay.auth())
    stale = {**relay.auth(), "If-None-Match": '"0000"'}
    polled = await relay.client.get(f"/v1/tasks/{task['id']}?wait=60", headers=stale)
    assert polled.status_code == 200
    assert polled.headers["etag"] == plain.headers["etag"]
    assert polled.json() == plain.json()


async def test_long_poll_is_woken_by_a_callback(relay: Relay) -> None:
    """A long-poll waiting on its task answers with the new state once a callback changed it."""
    task = await relay.created()
    url = f"/v1/tasks/{task['id']}?wait=60"
    polls = [asyncio.create_task(relay.client.get(url, headers=relay.auth())) for _ in range(5)]
    await _wait_for_watchers(relay, 5)
    progress = task_object(relay.grsai.issued[-1], "running", 40)
    assert (await relay.callback(relay.grsai.token(), progress)).status_code == 200
    answers = await asyncio.wait_for(asyncio.gather(*polls), HANG)
    assert {(a.status_code, a.json()["progress"]) for a in answers} == {(200, 40)}
    assert relay.services.watch.tasks == 0  # nothing left behind


async def test_long_poll_with_the_current_etag_waits_then_times_out_unchanged(
    relay: Relay,
) -> None:
    """With the current ETag in If-None-Match and no change, the answer is the same task."""
    task = await relay.created()
    plain = await relay.client.get(f"/v1/tasks/{task['id']}", headers=relay.auth())
    held = {**relay.auth(), "If-None-Match": plain.headers["etag"]}
    answer = await relay.client.get(f"/v1/tasks/{task['id']}?wait=0.2", headers=held)
    assert answer.status_code == 200
    assert answer.headers["etag"] == plain.headers["etag"]
    assert answer.json() == plain.json()


async def test_long_poll_on_a_settled_task_answers_at_once(relay: Relay) -> None:
    """A final task with nothing left to copy will not change: no wait."""
    task = await relay.created()
    await _fail(relay)
    plain = await relay.client.get(f"/v1/tasks/{task['id']}", headers=relay.auth())
    held = {**relay.auth(), "If-None-Match": plain.headers["etag"]}
    answer = await asyncio.wait_for(
        relay.client.get(f"/v1/tasks/{task['id']}?wait=60", headers=held), HANG
    )
    assert answer.json()["status"] == "failed"


async def test_long_poll_and_stream_of_another_keys_task_are_404(relay: Relay) -> None:
    """Both live routes answer 404 for a task that is not the caller's."""
    task = await relay.created()
    other, _ = await relay.new_key("other")
    for path in (f"/v1/tasks/{task['id']}?wait=1", f"/v1/tasks/{task['id']}/events"):
        response = await relay.client.get(path, headers=relay.auth(other))
        assert response.status_code == 404, path
    assert relay.services.streams.open_streams(relay.key_id) == 0


async def test_stream_of_a_settled_task_sends_it_once_then_ends(relay: Relay) -> None:
    """A settled task's stream is its state as one `task` event; resuming from it is 204."""
    task = await relay.created()
    await _fail(relay)
    url = f"/v1/tasks/{task['id']}/events"
    stream = await asyncio.wait_for(relay.client.get(url, headers=relay.auth()), HANG)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = parse_events(stream.text)
    assert [e["event"] for e in events] == ["task"]
    plain = await relay.client.get(f"/v1/tasks/{task['id']}", headers=relay.auth())
    assert f'"{events[0]["id"]}"' == plain.headers["etag"]
    resumed = await relay.client.get(
        url, headers={**relay.auth(), "Last-Event-ID": events[0]["id"]}
    )
    assert resumed.status_code == 204
    assert relay.services.streams.open_streams(relay.key_id) == 0


def parse_events(text: str) -> list[dict[str, Any]]:
    """The events of an SSE body (comments left out)."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            events.append(fields)
    return events


async def test_stream_refuses_beyond_the_per_key_limit(relay: Relay) -> None:
    """With every slot of the key taken, a new stream is 429 `too_many_streams`."""
    task = await relay.created()
    slots = relay.services.streams
    while slots.take(relay.key_id):
        pass
    response = await relay.client.get(f"/v1/tasks/{task['id']}/events", headers=relay.auth())
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_streams"
    assert response.headers["retry-after"] == "1"
    assert isinstance(response, httpx.Response)


async def test_live_answers_match_the_document(relay: Relay) -> None:
    """The long-poll's 200 (with its ETag) and 422, and the stream's 404 and 429, are what the
    OpenAPI document says."""
    document = document_for(RELAY_URL)
    task = await relay.created()
    one, events = "/v1/tasks/{task_id}", "/v1/tasks/{task_id}/events"
    polled = await relay.client.get(f"/v1/tasks/{task['id']}?wait=0.01", headers=relay.auth())
    conforms(document, one, "get", polled)
    bad = await relay.client.get(f"/v1/tasks/{task['id']}?wait=0", headers=relay.auth())
    conforms(document, one, "get", bad)
    missing = await relay.client.get("/v1/tasks/nope/events", headers=relay.auth())
    conforms(document, events, "get", missing)
    while relay.services.streams.take(relay.key_id):
        pass
    refused = await relay.client.get(f"/v1/tasks/{task['id']}/events", headers=relay.auth())
    assert conforms(document, events, "get", refused)["error"]["limit"] == 20


async def test_long_polls_are_counted_apart_from_lookups(relay: Relay) -> None:
    """Request metrics label a long-poll with its own route, so lookup latency stays true."""
    task = await relay.created()
    await relay.client.get(f"/v1/tasks/{task['id']}?wait=0.01", headers=relay.auth())
    await relay.client.get(f"/v1/tasks/{task['id']}", headers=relay.auth())
    text = (await relay.client.get("/metrics")).text
    polls = [line for line in text.splitlines() if 'route="/v1/tasks/{task_id}?wait"' in line]
    lookups = [line for line in text.splitlines() if 'route="/v1/tasks/{task_id}"' in line]
    assert any(line.startswith("grsai_relay_http_requests_total") for line in polls), polls
    assert any(line.startswith("grsai_relay_http_requests_total") for line in lookups), lookups
