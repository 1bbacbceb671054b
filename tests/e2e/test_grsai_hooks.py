"""End to end: GrsAI-shaped callbacks (`callback_format: "grsai"`) from a real relay, fed by the
simulator, to a real client endpoint on loopback: every progress change and the end arrive as
GrsAI's flat task object, signed (verified by the `standardwebhooks` package), once each, with
retries for a failing endpoint; relay-format tasks are unchanged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from standardwebhooks import Webhook

from service.simulator.config import SimulatorConfig
from tests.e2e.conftest import RelayFactory, auth, wait_for_task
from tests.e2e.harness import UPSTREAM_KEY, RelayProcess, SimulatorServer
from tests.e2e.receiver import Receiver
from tests.e2e.test_deliveries import deliveries, keys

FAST = {"DELIVERY_SCHEDULE": "0,0.2,0.2,0.2", "DELIVERY_TIMEOUT": "1"}
GRSAI_FIELDS = {
    "id", "task_id", "status", "progress", "results", "url", "width", "height",
    "failure_reason", "error", "start_time", "end_time", "callback_url",
}  # fmt: skip


@pytest.fixture(name="simulator")
def _simulator() -> Iterator[SimulatorServer]:
    """A simulator whose progress steps are far enough apart (0.3 s) for each to be delivered
    before the next one (the shared one steps every 50 ms)."""
    sim = SimulatorServer(SimulatorConfig(api_key=UPSTREAM_KEY, step_interval=0.3)).start()
    yield sim
    sim.stop()


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[Receiver]:
    """A client endpoint on 127.0.0.1."""
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


async def submit(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, hook: str, **fields: Any
) -> dict[str, Any]:
    """Submit a task whose callbacks go to `hook` (GrsAI-shaped unless told otherwise)."""
    body = {"model": "nano-banana", "prompt": "a fox", "callback_url": hook, **fields}
    body.setdefault("callback_format", "grsai")
    response = await client.post(f"{relay.url}/v1/tasks", json=body, headers=auth(key))
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    return task


async def settled_deliveries(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, task_id: str
) -> list[dict[str, Any]]:
    """The task's deliveries once its final one is delivered and none is pending."""
    found: list[dict[str, Any]] = []
    for _ in range(1200):  # a hang guard of 60 s; the wait itself is on the condition
        found = await deliveries(client, relay, key, task_id)
        final = [d for d in found if d["event_type"] != "task.progress"]
        done = final and final[0]["status"] == "delivered"
        if done and all(d["status"] != "pending" for d in found):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"the deliveries never settled: {found}")


def verified(receiver: Receiver, behaviour: str, secret: str) -> list[dict[str, Any]]:
    """Every body the endpoint got on `behaviour`'s path, each verified by the library."""
    bodies = []
    for got in receiver.bodies(behaviour):
        assert got.headers["content-type"] == "application/json"
        bodies.append(Webhook(secret).verify(got.body, got.headers))
    return bodies


async def test_progress_and_final_arrive_in_grsais_shape_signed(
    start_relay: RelayFactory, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """Rising progress posts, then the final one with our copies as signed links; each body
    verifies, each webhook-id is a delivery of the task; a relay-format task is unchanged."""
    relay = start_relay(**FAST)
    key, secret = keys(relay)
    task = await submit(client, relay, key, receiver.url("ok"))
    assert task["callback_format"] == "grsai"
    found = await settled_deliveries(client, relay, key, task["id"])
    bodies = verified(receiver, "ok", secret)
    assert all(set(body) == GRSAI_FIELDS for body in bodies)
    assert all(body["id"] == task["id"] for body in bodies)
    *progress, final = bodies
    assert progress, "no progress post arrived"
    assert all(body["status"] == "running" for body in progress)
    values = [body["progress"] for body in progress]
    assert values == sorted(set(values))
    assert (final["status"], final["progress"]) == ("succeeded", 100)
    (result,) = final["results"]
    link = urlsplit(result["url"])
    assert f"{link.scheme}://{link.netloc}{link.path}" == f"{relay.url}/v1/files/{task['id']}/0"
    assert set(parse_qs(link.query)) == {"expires", "sig"}
    assert final["url"] == result["url"]
    ids = [got.headers["webhook-id"] for got in receiver.bodies("ok")]
    assert ids == [d["id"] for d in found if d["status"] == "delivered"]
    assert [d["progress"] for d in found if d["event_type"] == "task.progress"][:1] == values[:1]
    assert found[-1]["event_type"] == "task.succeeded"

    plain = await submit(client, relay, key, receiver.url("relay"), callback_format="relay")
    (delivery,) = await settled_deliveries(client, relay, key, plain["id"])
    (event,) = verified(receiver, "relay", secret)
    assert (delivery["event_type"], event["type"]) == ("task.succeeded", "task.succeeded")
    assert event["data"] == await wait_for_task(client, relay, key, plain["id"])


@pytest.mark.parametrize("fault", ["duplicate", "reorder"])
async def test_duplicated_or_reordered_news_is_delivered_once(
    start_relay: RelayFactory, receiver: Receiver, client: httpx.AsyncClient, fault: str
) -> None:
    """GrsAI's callbacks sent twice or shuffled: each progress value and the end reach the
    client once (one webhook-id per delivery), never going back from the end to running."""
    relay = start_relay(**FAST)
    key, secret = keys(relay)
    task = await submit(client, relay, key, receiver.url(fault), prompt=f"a fox [sim:{fault}]")
    found = await settled_deliveries(client, relay, key, task["id"])
    await asyncio.sleep(0.5)  # late copies of the simulator's callbacks, if any, are in
    assert await deliveries(client, relay, key, task["id"]) == found
    ids = [got.headers["webhook-id"] for got in receiver.bodies(fault)]
    assert len(ids) == len(set(ids))
    bodies = verified(receiver, fault, secret)
    progress = [d["progress"] for d in found if d["event_type"] == "task.progress"]
    assert len(progress) == len(set(progress))
    assert bodies[-1]["status"] == "succeeded"
    assert all(body["status"] == "running" for body in bodies[:-1])


async def test_a_failing_endpoint_gets_retries(
    start_relay: RelayFactory, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """500 twice, then 200: the failed posts are retried under the same webhook-id, and the
    final one is delivered."""
    relay = start_relay(**FAST)
    key, secret = keys(relay)
    task = await submit(client, relay, key, receiver.url("flaky"))
    found = await settled_deliveries(client, relay, key, task["id"])
    log = [a["status_code"] for d in found for a in d["attempt_log"]]
    assert log.count(500) == 2
    retried = [d for d in found if d["attempts"] > 1]
    assert retried, found
    assert all(d["attempt_log"][0]["status_code"] == 500 for d in retried)
    got = receiver.bodies("flaky")
    assert {r.headers["webhook-id"] for r in got} == {d["id"] for d in found if d["attempts"]}
    final = Webhook(secret).verify(got[-1].body, got[-1].headers)
    assert (final["id"], final["status"]) == (task["id"], "succeeded")
    assert json.loads(got[-1].body) == final
