"""GrsAI-shaped callbacks: the outbox rules, the state machine's progress events, the
Deliverer's body and headers (GrsAI's flat task object, signed like every delivery), and the
submitter's `callback_format`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from service.domain.errors import ValidationFailed
from service.domain.links import link_valid
from service.domain.observation import Observation
from service.domain.outbox import (
    PROGRESS_EVENT,
    SUPERSEDED,
    OutboxEvent,
    delivery_id,
    final_event,
    progress_event,
    superseded,
)
from service.domain.records import ApiKey, Delivery, Task
from service.domain.transitions import Decision, decide
from service.jobs.delivery import Deliverer, DeliveryPolicy
from service.storage import Storage, open_storage
from service.upstream.clients import watched_client
from service.upstream.netguard import UrlGuard
from service.upstream.signing import signature
from tests.doubles import ManualClock
from tests.unit.conftest import PUBLIC_IP, RELAY_URL, FakeGrsai, Relay, public_resolver

NOW = 1_700_000_000.0
HOOK = "https://client.example/grsai/callback"
SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"  # base64 of 24 letters
KEY = ApiKey("key_1", "client", "grk_client00", NOW)
BASE = "https://relay.example"


def grsai_task(**changes: Any) -> Task:
    """A grsai-format task of KEY that calls back HOOK."""
    values: dict[str, Any] = {
        "id": "task_1",
        "api_key_id": KEY.id,
        "model": "nano-banana",
        "endpoint": "/v1/draw/nano-banana",
        "mode": "poll",
        "input": {"model": "nano-banana", "prompt": "a fox"},
        "created_at": NOW,
        "updated_at": NOW,
        "upstream_id": "up-1",
        "submit_state": "submitted",
        "callback_url": HOOK,
        "callback_format": "grsai",
        **changes,
    }
    return Task(**values)


def test_progress_ids_are_stable_per_value_and_apart_from_the_final_one() -> None:
    """One id per task and progress value; the final event's id is unchanged by the feature."""
    ids = {delivery_id("t", PROGRESS_EVENT, p) for p in (10, 10, 20)}
    assert len(ids) == 2
    assert delivery_id("t", "task.succeeded") not in ids
    assert delivery_id("t", "task.succeeded", None) == delivery_id("t", "task.succeeded")


def test_progress_events_are_for_grsai_shaped_tasks_with_a_url() -> None:
    """Relay-shaped tasks and tasks without a URL get none; the row records its value."""
    assert progress_event("t", "k", "relay", HOOK, 10, NOW) is None
    assert progress_event("t", "k", "grsai", None, 10, NOW) is None
    event = progress_event("t", "k", "grsai", HOOK, 10, NOW)
    assert event is not None
    row = event.row(gone=False)
    assert (row.id, row.event_type, row.progress, row.status, row.next_attempt_at) == (
        delivery_id("t", PROGRESS_EVENT, 10),
        PROGRESS_EVENT,
        10,
        "pending",
        NOW,
    )
    final = final_event("t", "k", "failed", HOOK, NOW, copies_pending=False)
    assert final is not None
    assert final.row(gone=True).progress is None


def test_a_progress_event_of_a_final_task_is_superseded() -> None:
    """Only progress events are dropped, and only once their task is final."""
    progress = Delivery("d", "t", "k", PROGRESS_EVENT, HOOK, "pending", 0, NOW, NOW, progress=5)
    final = Delivery("d", "t", "k", "task.failed", HOOK, "pending", 0, NOW, NOW)
    assert not superseded(progress, "running")
    assert superseded(progress, "succeeded")
    assert not superseded(final, "failed")


def test_the_state_machine_queues_a_progress_event_per_rise() -> None:
    """Starting to run and every rise queue one; a repeat, older news and relay-shaped tasks
    queue none; the end queues the final event only."""
    task = grsai_task()
    start = decide(task, Observation("up-1", "running", 0), NOW)
    assert start.progress_event is not None
    assert start.progress_event.progress == 0
    running = grsai_task(status="running", progress=30)
    rise = decide(running, Observation("up-1", "running", 45), NOW)
    assert rise.progress_event is not None
    assert rise.progress_event.progress == 45
    assert decide(running, Observation("up-1", "running", 30), NOW).progress_event is None
    assert decide(running, Observation("up-1", "running", 20), NOW).progress_event is None
    relay = grsai_task(status="running", progress=30, callback_format="relay")
    assert decide(relay, Observation("up-1", "running", 45), NOW).progress_event is None
    end = decide(running, Observation("up-1", "failed", 30, error="boom"), NOW)
    assert (end.progress_event, end.final_event is not None) == (None, True)


@pytest.fixture(name="storage")
async def _storage(tmp_path: Path) -> AsyncIterator[Storage]:
    storage = open_storage(f"sqlite:///{tmp_path}/hooks.db")
    await storage.open()
    await storage.create_api_key(KEY, b"k" * 32)
    await storage.add_signing_secret(KEY.id, SECRET, NOW, retire_others_at=None)
    try:
        yield storage
    finally:
        await storage.close()


class Client:
    """The client's endpoint behind `httpx.MockTransport`: records requests, answers like a
    GrsAI receiver in the wild."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Record the request; answer `{"code":0,"msg":"success"}`."""
        self.requests.append(request)
        return httpx.Response(self.status, json={"code": 0, "msg": "success"})


def assert_signed(request: httpx.Request) -> None:
    """The request carries SECRET's Standard Webhooks signature of its id, time and body (the
    e2e tests verify with the `standardwebhooks` package, which checks against wall time)."""
    msg_id, stamp = request.headers["webhook-id"], int(request.headers["webhook-timestamp"])
    assert stamp == NOW + 10
    expected = signature(SECRET, msg_id, stamp, request.content)
    assert request.headers["webhook-signature"].split() == [expected]


def deliverer(storage: Storage, client: Client) -> Deliverer:
    """A deliverer sending to `client`, with BASE as the public URL."""
    http = watched_client(
        "deliveries",
        capacity=4,
        timeout=httpx.Timeout(5.0),
        transport=httpx.MockTransport(client.handle),
    )
    guard = UrlGuard(resolver=public_resolver)
    return Deliverer(
        storage, http, guard, ManualClock(NOW + 10), DeliveryPolicy(), base_url=lambda: BASE
    )


def observed(obs: Observation, at: float) -> Callable[[Task], Decision]:
    """The state machine's decide for `obs` arriving at `at`."""

    def decide_now(task: Task) -> Decision:
        return decide(task, obs, at)

    return decide_now


def queueing(event: OutboxEvent) -> Callable[[Task], Decision]:
    """A decide that only queues `event` as the final event."""

    def decide_now(_task: Task) -> Decision:
        return Decision("applied", final_event=event)

    return decide_now


async def queue(storage: Storage, task: Task, *observations: Observation) -> None:
    """Store `task` and apply each observation through the state machine."""
    await storage.insert_task(task)
    for n, obs in enumerate(observations):
        await storage.apply(task.id, observed(obs, NOW + n), None)


async def drain(storage: Storage, client: Client) -> list[httpx.Request]:
    """Send every due delivery and wait for the sends to finish."""
    worker = deliverer(storage, client)
    await worker.run_once()
    for job in list(worker.running):
        await job
    return client.requests


async def test_a_progress_post_is_grsais_task_object_signed(storage: Storage) -> None:
    """The body is GrsAI's flat object as the task was at that progress, with the Standard
    Webhooks headers a verifier accepts and JSON's content type."""
    await queue(storage, grsai_task(), Observation("up-1", "running", 40))
    client = Client()
    (request,) = await drain(storage, client)
    assert str(request.url) == f"https://{PUBLIC_IP}/grsai/callback"
    assert request.headers["host"] == "client.example"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == delivery_id("task_1", PROGRESS_EVENT, 40)
    assert_signed(request)
    body = json.loads(request.content)
    assert {k: body[k] for k in ("id", "status", "progress", "results", "url", "end_time")} == {
        "id": "task_1",
        "status": "running",
        "progress": 40,
        "results": None,
        "url": "",
        "end_time": 0,
    }
    assert "type" not in body  # no relay envelope


async def test_a_final_post_lists_signed_links_to_the_stored_copies(storage: Storage) -> None:
    """A success's body carries GrsAI's results with our copies as signed, expiring links."""
    stored = {
        "url": "/v1/tasks/task_1/results/0",
        "upstream_url": "https://files.grsai.example/a.png",
        "width": 4,
        "height": 3,
        "asset": {"status": "stored"},
    }
    task = grsai_task(status="succeeded", progress=100, completed_at=NOW + 2, results=[stored])
    await storage.insert_task(task)
    event = final_event(task.id, KEY.id, "succeeded", HOOK, NOW + 2, copies_pending=False)
    assert event is not None
    await storage.apply(task.id, queueing(event), None)
    client = Client()
    (request,) = await drain(storage, client)
    body = json.loads(request.content)
    assert (body["status"], body["progress"], body["end_time"]) == ("succeeded", 100, NOW + 2)
    (result,) = body["results"]
    assert (result["width"], result["height"], body["url"]) == (4, 3, result["url"])
    link = urlsplit(result["url"])
    assert f"{link.scheme}://{link.netloc}{link.path}" == f"{BASE}/v1/files/task_1/0"
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    expires = int(query["expires"])
    assert expires == NOW + 10 + DeliveryPolicy().link_ttl
    assert link_valid([SECRET], "task_1", 0, expires, query["sig"], NOW + 10)
    assert_signed(request)


async def test_a_relay_shaped_task_keeps_the_relay_envelope(storage: Storage) -> None:
    """Relay-format tasks get the event envelope as before, and no progress posts."""
    task = grsai_task(callback_format="relay")
    await queue(
        storage, task, Observation("up-1", "running", 40), Observation("up-1", "failed", 40)
    )
    client = Client()
    (request,) = await drain(storage, client)
    body = json.loads(request.content)
    assert (body["type"], body["data"]["status"], body["data"]["id"]) == (
        "task.failed",
        "failed",
        "task_1",
    )


async def test_a_progress_event_of_a_finished_task_is_dropped(storage: Storage) -> None:
    """When the task is final before its progress post goes out, only the final one is sent;
    the progress event is dead with the reason."""
    await queue(
        storage,
        grsai_task(),
        Observation("up-1", "running", 40),
        Observation("up-1", "failed", 40, error="boom"),
    )
    client = Client()
    requests = await drain(storage, client)
    assert [json.loads(r.content)["status"] for r in requests] == ["failed"]
    found = {d.event_type: d for d, _ in await storage.deliveries_of("task_1")}
    progress = found[PROGRESS_EVENT]
    assert (progress.status, progress.last_error) == ("dead", SUPERSEDED)
    assert found["task.failed"].status == "delivered"


async def test_the_submitter_takes_a_callback_format(relay: Relay, grsai: FakeGrsai) -> None:
    """'grsai' is stored on the task, the client's URL never reaches GrsAI (the relay's own
    callback URL does), and an unknown format is refused naming the field."""
    caller = ApiKey(relay.key_id, "caller", "grk_x", NOW)
    submitter = relay.services.submitter
    body = {"model": "nano-banana", "prompt": "a fox", "callback_url": HOOK}
    accepted = await submitter.submit(caller, body, "idem-1", callback_format="grsai")
    assert accepted.task.callback_format == "grsai"
    assert accepted.task.callback_url == HOOK
    assert HOOK not in json.dumps(grsai.submit_bodies[-1])
    assert grsai.web_hook().startswith(f"{RELAY_URL}/webhooks/grsai/")
    again = await submitter.submit(caller, body, "idem-1", callback_format="grsai")
    assert (again.replayed, again.task.id) == (True, accepted.task.id)
    with pytest.raises(ValidationFailed) as refused:
        await submitter.submit(caller, body, None, callback_format="xml")
    assert refused.value.details["fields"][0]["field"] == "callback_format"
    with pytest.raises(ValidationFailed):  # the same key with another format: another request
        await submitter.submit(caller, body, "idem-1")


async def test_the_native_api_takes_a_callback_format(relay: Relay) -> None:
    """POST /v1/tasks with callback_format 'grsai' makes a grsai-format task."""
    task = await relay.created(callback_url=HOOK, callback_format="grsai")
    assert task["callback_format"] == "grsai"
    assert (await relay.task(task["id"])).callback_format == "grsai"
    plain = await relay.created(callback_url=HOOK)
    assert plain["callback_format"] == "relay"
