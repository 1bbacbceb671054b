"""End to end: signed callbacks to a real client endpoint on loopback, verified by the
`standardwebhooks` package (a verifier we did not write)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.e2e.conftest import RelayFactory, auth, wait_for_task
from tests.e2e.harness import RelayProcess
from tests.e2e.receiver import Receiver

FAST = {"DELIVERY_SCHEDULE": "0,0.2,0.2", "DELIVERY_TIMEOUT": "1"}


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[Receiver]:
    """A client endpoint on 127.0.0.1."""
    receiver = Receiver(slow_seconds=3.0).start()
    yield receiver
    receiver.stop()


def keys(relay: RelayProcess) -> tuple[str, str]:
    """(API key, signing secret) from `keys create`."""
    key, secret = relay.cli("keys", "create", "--name", "client").splitlines()[:2]
    return key, secret


async def submit(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, callback_url: str, prompt: str = "x"
) -> dict[str, Any]:
    """Submit a task that calls back `callback_url`."""
    response = await client.post(
        f"{relay.url}/v1/tasks",
        json={"model": "nano-banana", "prompt": prompt, "callback_url": callback_url},
        headers=auth(key),
    )
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    return task


async def deliveries(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, task_id: str
) -> list[dict[str, Any]]:
    """GET /v1/tasks/{id}/deliveries."""
    response = await client.get(f"{relay.url}/v1/tasks/{task_id}/deliveries", headers=auth(key))
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def wait_delivery(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, task_id: str, status: str
) -> dict[str, Any]:
    """Wait until the task's final delivery has `status`."""
    for _ in range(1200):  # a hang guard of 60 s; the wait itself is on the condition
        found = await deliveries(client, relay, key, task_id)
        if found and found[0]["status"] == status:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"delivery never became {status}: {found}")


async def test_flaky_endpoint_gets_a_verifiable_event_after_retries(
    start_relay: RelayFactory, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """Two 500s then 200: delivered, one webhook-id throughout, verified by the library."""
    relay = start_relay(**FAST)
    key, secret = keys(relay)
    task = await submit(client, relay, key, receiver.url("flaky"))
    delivery = await wait_delivery(client, relay, key, task["id"], "delivered")
    assert delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]
    got = receiver.bodies("flaky")
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert got[0].headers["webhook-id"] == delivery["id"]
    event = Webhook(secret).verify(got[-1].body, got[-1].headers)
    done = await wait_for_task(client, relay, key, task["id"])
    assert event["type"] == "task.succeeded"
    assert event["data"] == done
    assert event["data"]["results"][0]["asset"]["status"] == "stored"  # sent after the copy
    assert event["data"]["results"][0]["stored_at"].endswith("Z")  # RFC 3339, as in the API
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(got[-1].body, got[-1].headers)


async def test_failed_task_sends_task_failed(
    start_relay: RelayFactory, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """A task GrsAI fails is reported as task.failed with its reason."""
    relay = start_relay(**FAST)
    key, secret = keys(relay)
    task = await submit(client, relay, key, receiver.url("ok"), "x [sim:fail=input_moderation]")
    await wait_delivery(client, relay, key, task["id"], "delivered")
    got = receiver.bodies("ok")[-1]
    event = Webhook(secret).verify(got.body, got.headers)
    assert event["type"] == "task.failed"
    assert event["data"]["failure_reason"] == "input_moderation"


async def test_endpoint_always_down_goes_dead_and_replays(
    start_relay: RelayFactory, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """After the schedule the delivery is dead; replay sends it again once the client is back."""
    relay = start_relay(**FAST)
    key, secret = keys(relay)
    task = await submit(client, relay, key, receiver.url("down"))
    dead = await wait_delivery(client, relay, key, task["id"], "dead")
    assert dead["attempts"] == 3
    assert dead["last_error"] == "HTTP 503"
    receiver.overrides["down"] = "ok"
    replay = await client.post(f"{relay.url}/v1/deliveries/replay?since=0", headers=auth(key))
    assert (replay.status_code, replay.json()) == (202, {"requeued": 1})
    delivered = await wait_delivery(client, relay, key, task["id"], "delivered")
    assert delivered["id"] == dead["id"]
    got = receiver.bodies("down")[-1]
    assert Webhook(secret).verify(got.body, got.headers)["data"]["id"] == task["id"]


async def test_redirects_are_failures_and_not_followed(
    start_relay: RelayFactory, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """A 302 counts as a failed attempt; the Location is never visited."""
    relay = start_relay(**FAST)
    key, _ = keys(relay)
    task = await submit(client, relay, key, receiver.url("redirect"))
    dead = await wait_delivery(client, relay, key, task["id"], "dead")
    assert {a["status_code"] for a in dead["attempt_log"]} == {302}
    assert "redirects are not followed" in dead["last_error"]
    assert receiver.bodies("ok") == []


async def test_gone_stops_deliveries_to_that_url(
    start_relay: RelayFactory, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """410 Gone kills the delivery at once, and later events for that URL are not sent."""
    relay = start_relay(**FAST)
    key, _ = keys(relay)
    first = await submit(client, relay, key, receiver.url("gone"))
    dead = await wait_delivery(client, relay, key, first["id"], "dead")
    assert dead["attempts"] == 1
    second = await submit(client, relay, key, receiver.url("gone"))
    later = await wait_delivery(client, relay, key, second["id"], "dead")
    assert later["attempts"] == 0
    assert len(receiver.bodies("gone")) == 1


async def test_rotation_signs_with_both_secrets(
    start_relay: RelayFactory, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """During a rotation both the old and the new secret verify the same delivery."""
    relay = start_relay(**FAST)
    key, old = keys(relay)
    new = relay.cli("keys", "rotate-secret", key[:12]).strip()
    assert new.startswith("whsec_")
    assert new != old
    task = await submit(client, relay, key, receiver.url("ok"))
    await wait_delivery(client, relay, key, task["id"], "delivered")
    got = receiver.bodies("ok")[-1]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(got.body, got.headers)["data"]["id"] == task["id"]
    assert Webhook(new).verify(got.body, got.headers)["data"]["id"] == task["id"]


async def test_redeliver_sends_the_final_event_again_with_the_same_id(
    start_relay: RelayFactory, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """Redeliver makes a new attempt under the same webhook-id."""
    relay = start_relay(**FAST)
    key, _ = keys(relay)
    task = await submit(client, relay, key, receiver.url("ok"))
    first = await wait_delivery(client, relay, key, task["id"], "delivered")
    url = f"{relay.url}/v1/tasks/{task['id']}/deliveries/redeliver"
    response = await client.post(url, headers=auth(key))
    assert response.status_code == 202
    for _ in range(1200):  # a hang guard of 60 s
        if len(receiver.bodies("ok")) == 2:
            break
        await asyncio.sleep(0.05)
    ids = [r.headers["webhook-id"] for r in receiver.bodies("ok")]
    assert ids == [first["id"], first["id"]]
    json.loads(receiver.bodies("ok")[1].body)  # a full event body again


async def test_slow_client_does_not_hold_up_others(
    start_relay: RelayFactory, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """With one slot per host, a hanging host's queue does not delay another host's event."""
    relay = start_relay(DELIVERY_PER_HOST="1", DELIVERY_TIMEOUT="5", DELIVERY_SCHEDULE="0")
    key, _ = keys(relay)
    slow = [await submit(client, relay, key, receiver.url("slow")) for _ in range(3)]
    fast = await submit(client, relay, key, receiver.url("ok", host="localhost"))
    await wait_delivery(client, relay, key, fast["id"], "delivered")
    states = [(await deliveries(client, relay, key, t["id"]))[0]["status"] for t in slow]
    assert states.count("pending") >= 2  # still queued behind the one in flight


@pytest.mark.parametrize(
    "callback_url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",  # a name that resolves to loopback
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/hook",
        "http://10.0.0.1/hook",
        "http://100.64.0.1/hook",
        "ftp://example.com/hook",
        "http://user:pw@example.com/hook",
    ],
)
async def test_ssrf_callback_urls_are_refused_without_the_allow_list(
    start_relay: RelayFactory, client: httpx.AsyncClient, callback_url: str
) -> None:
    """Private, loopback, metadata and mapped addresses are refused at submit: 422."""
    relay = start_relay(DELIVERY_ALLOW_NETWORKS="")
    key, _ = keys(relay)
    response = await client.post(
        f"{relay.url}/v1/tasks",
        json={"model": "nano-banana", "prompt": "x", "callback_url": callback_url},
        headers=auth(key),
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == "callback_url"
