"""The poller, driven one round at a time with a ManualClock and a fake GrsAI."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from service.domain.records import Task
from tests.unit.conftest import MakeRelay, Relay, task_object, wrapped

URL = "https://file.grsai.test/out.png"
FIRST_DELAY = 3.0  # Settings.poll_first_delay
BACKOFF = 1.5  # Settings.poll_backoff
JITTER = (0.8, 1.2)  # PollPolicy.after_poll spreads each delay by ±20%


async def submitted(relay: Relay) -> tuple[Task, str]:
    """Submit one task; return it as stored and its upstream id."""
    created = await relay.created()
    task = await relay.task(created["id"])
    assert task.upstream_id is not None
    return task, task.upstream_id


async def hang(request: httpx.Request) -> httpx.Response:
    """A GrsAI that never answers in time."""
    raise httpx.ReadTimeout("no answer", request=request)


async def test_poll_mode_task_is_polled_to_completion(poll_relay: Relay) -> None:
    """A poll-mode task is polled first_delay after submit and completes from the answer."""
    relay = poll_relay
    task, upstream_id = await submitted(relay)
    assert task.next_poll_at == relay.clock.now() + FIRST_DELAY
    assert await relay.poller.run_once() == 0
    assert relay.grsai.poll_ids == []

    relay.clock.advance(FIRST_DELAY)
    answer = relay.grsai.succeed(upstream_id, URL)
    assert await relay.poller.run_once() == 1
    assert relay.grsai.poll_ids == [upstream_id]
    done = await relay.task(task.id)
    assert done.status == "succeeded"
    assert done.progress == 100
    assert [(r["upstream_url"], r["url"], r["asset"]["status"]) for r in done.results] == [
        (URL, None, "pending")
    ]
    assert done.completed_at == relay.clock.now()
    assert done.next_poll_at is None
    events = await relay.storage.events(task.id)
    assert [(e.source, e.outcome) for e in events] == [("poll", "applied")]
    assert json.loads(events[0].body) == answer
    assert await relay.poller.run_once() == 0


async def test_running_answer_updates_progress_and_backs_off(poll_relay: Relay) -> None:
    """A running answer moves the task to running and schedules the next poll with backoff."""
    relay = poll_relay
    task, upstream_id = await submitted(relay)
    relay.clock.advance(FIRST_DELAY)
    relay.grsai.tasks[upstream_id] = task_object(upstream_id, "running", 35)
    await relay.poller.run_once()
    polled = await relay.task(task.id)
    assert (polled.status, polled.progress, polled.poll_attempts) == ("running", 35, 1)
    assert polled.next_poll_at is not None
    delay = polled.next_poll_at - relay.clock.now()
    nominal = FIRST_DELAY * BACKOFF
    assert JITTER[0] * nominal <= delay <= JITTER[1] * nominal
    assert await relay.storage.events(task.id) == []  # only terminal polls are stored


async def test_not_found_within_grace_reschedules(poll_relay: Relay) -> None:
    """Code -22 shortly after submit is retried later, not taken as lost."""
    relay = poll_relay
    task, upstream_id = await submitted(relay)
    del relay.grsai.tasks[upstream_id]
    relay.clock.advance(FIRST_DELAY)
    await relay.poller.run_once()
    polled = await relay.task(task.id)
    assert polled.status == "pending"
    assert polled.poll_attempts == 1
    assert polled.next_poll_at is not None
    assert polled.next_poll_at > relay.clock.now()
    assert relay.grsai.poll_ids == [upstream_id]


async def test_not_found_after_grace_is_lost(poll_relay: Relay) -> None:
    """Code -22 after not_found_grace fails the task as `lost`."""
    relay = poll_relay
    task, upstream_id = await submitted(relay)
    del relay.grsai.tasks[upstream_id]
    relay.clock.advance(FIRST_DELAY)
    await relay.poller.run_once()
    relay.clock.advance(60.0)
    assert await relay.poller.run_once() == 1
    lost = await relay.task(task.id)
    assert lost.status == "failed"
    assert lost.failure_reason == "lost"
    assert lost.error is not None
    assert "-22" in lost.error
    assert lost.next_poll_at is None
    events = await relay.storage.events(task.id)
    assert [(e.source, e.outcome, e.detail) for e in events] == [("local", "applied", "lost")]


async def test_task_older_than_max_age_times_out(make_relay: MakeRelay) -> None:
    """A task older than task_max_age fails as `timeout` without polling GrsAI."""
    relay = await make_relay(public_base_url=None, task_max_age=600.0)
    task, _ = await submitted(relay)
    relay.clock.advance(601.0)
    assert await relay.poller.run_once() == 1
    timed_out = await relay.task(task.id)
    assert (timed_out.status, timed_out.failure_reason) == ("failed", "timeout")
    assert timed_out.error == "no result after 601 s"
    assert relay.grsai.poll_ids == []


async def test_default_max_age_is_six_hours(poll_relay: Relay) -> None:
    """With default settings a task silent for over six hours times out."""
    relay = poll_relay
    task, _ = await submitted(relay)
    relay.clock.advance(6 * 3600.0 + 1)
    await relay.poller.run_once()
    assert (await relay.task(task.id)).failure_reason == "timeout"


async def test_interrupted_submit_is_failed_after_grace(relay: Relay) -> None:
    """A task stuck in `submitting` without an upstream id fails after submit_recovery_grace."""
    relay.grsai.on_submit = hang
    task_id = (await relay.submit()).json()["error"]["task_id"]
    stuck = await relay.task(task_id)
    assert (stuck.submit_state, stuck.upstream_id) == ("submitting", None)
    assert stuck.next_poll_at == relay.clock.now() + 300.0

    relay.clock.advance(299.0)
    assert await relay.poller.run_once() == 0
    relay.clock.advance(1.0)
    assert await relay.poller.run_once() == 1  # due, but not yet past the grace: rescheduled
    assert (await relay.task(task_id)).status == "pending"

    relay.clock.advance(60.0)
    assert await relay.poller.run_once() == 1
    failed = await relay.task(task_id)
    assert (failed.status, failed.failure_reason) == ("failed", "submit_interrupted")
    assert failed.next_poll_at is None
    assert relay.grsai.poll_ids == []


async def test_upstream_error_reschedules_with_backoff(poll_relay: Relay) -> None:
    """Poll failures keep the task as it is and push the next poll out further each time."""
    relay = poll_relay
    task, _ = await submitted(relay)

    async def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="oops")

    relay.grsai.on_poll = broken
    relay.clock.advance(FIRST_DELAY)
    delays: list[float] = []
    for attempt in range(1, 5):
        assert await relay.poller.run_once() == 1
        polled = await relay.task(task.id)
        assert polled.status == "pending"
        assert polled.poll_attempts == attempt
        assert polled.next_poll_at is not None
        delays.append(polled.next_poll_at - relay.clock.now())
        nominal = FIRST_DELAY * BACKOFF**attempt
        assert JITTER[0] * nominal <= delays[-1] <= JITTER[1] * nominal
        relay.clock.advance(delays[-1])
    assert delays == sorted(delays)
    assert len(set(delays)) == len(delays)
    assert len(relay.grsai.poll_ids) == 4


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, text="<html>busy</html>"),
        httpx.Response(200, json=wrapped(task_object("16-someone-else"))),
        httpx.Response(200, json=wrapped({"id": "x", "status": "exploded"})),
        httpx.Response(200, json=wrapped(None, -1, "server busy")),
    ],
)
async def test_unreadable_poll_answer_reschedules(poll_relay: Relay, reply: httpx.Response) -> None:
    """Answers the relay cannot use (HTML, another task, bad shape, code != 0) are retried later."""
    relay = poll_relay
    task, _ = await submitted(relay)

    async def odd(request: httpx.Request) -> httpx.Response:
        return reply

    relay.grsai.on_poll = odd
    relay.clock.advance(FIRST_DELAY)
    assert await relay.poller.run_once() == 1
    polled = await relay.task(task.id)
    assert (polled.status, polled.poll_attempts) == ("pending", 1)
    assert polled.next_poll_at is not None
    assert polled.next_poll_at > relay.clock.now()


async def test_max_interval_caps_backoff(make_relay: MakeRelay) -> None:
    """However many polls failed, the next one is at most poll_max_interval (+20%) away."""
    relay = await make_relay(public_base_url=None, poll_max_interval=10.0)
    task, upstream_id = await submitted(relay)
    del relay.grsai.tasks[upstream_id]
    for _ in range(12):
        relay.clock.advance(15.0)
        await relay.poller.run_once()
        polled = await relay.task(task.id)
        if polled.terminal:
            break
        assert polled.next_poll_at is not None
        assert polled.next_poll_at - relay.clock.now() <= 12.0


async def test_silent_callback_task_is_polled(relay: Relay) -> None:
    """A callback-mode task with no callback is polled after callback_silence."""
    task, upstream_id = await submitted(relay)
    assert task.next_poll_at == relay.clock.now() + 60.0
    relay.grsai.succeed(upstream_id, URL)
    relay.clock.advance(59.0)
    assert await relay.poller.run_once() == 0
    relay.clock.advance(1.0)
    assert await relay.poller.run_once() == 1
    assert (await relay.task(task.id)).status == "succeeded"


async def test_claim_due_leases(poll_relay: Relay) -> None:
    """Claiming due tasks leases them: a second claim right after returns nothing."""
    relay = poll_relay
    task, _ = await submitted(relay)
    now = relay.clock.now() + FIRST_DELAY
    claimed = await relay.storage.claim_due(now, 10, now + 60.0)
    assert [t.id for t in claimed] == [task.id]
    assert await relay.storage.claim_due(now, 10, now + 60.0) == []
    assert (await relay.task(task.id)).next_poll_at == now + 60.0
    assert await relay.storage.claim_due(now + 59.0, 10, now + 120.0) == []
    again = await relay.storage.claim_due(now + 60.0, 10, now + 120.0)
    assert [t.id for t in again] == [task.id]


async def test_claim_due_respects_limit_and_order(poll_relay: Relay) -> None:
    """Claims take the most overdue tasks first, at most `limit` of them."""
    relay = poll_relay
    ids = []
    for _ in range(3):
        ids.append((await submitted(relay))[0].id)
        relay.clock.advance(1.0)
    now = relay.clock.now() + FIRST_DELAY
    first = await relay.storage.claim_due(now, 2, now + 60.0)
    second = await relay.storage.claim_due(now, 2, now + 60.0)
    assert [t.id for t in first] == ids[:2]
    assert [t.id for t in second] == ids[2:]


async def test_in_flight_poll_is_not_claimed_twice(poll_relay: Relay) -> None:
    """While a poll is in flight, another poller round does not poll the same task."""
    relay = poll_relay
    _, upstream_id = await submitted(relay)
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        return httpx.Response(200, json=wrapped(task_object(upstream_id, "running", 10)))

    relay.grsai.on_poll = slow
    relay.clock.advance(FIRST_DELAY)
    first = asyncio.create_task(relay.poller.run_once())
    async with asyncio.timeout(5):
        await entered.wait()
    assert await relay.poller.run_once() == 0
    release.set()
    assert await first == 1
    assert relay.grsai.poll_ids == [upstream_id]


async def test_retry_after_submit_interrupted_is_not_in_flight(relay: Relay) -> None:
    """Once an interrupted submit is failed, its Idempotency-Key no longer answers 409."""
    relay.grsai.on_submit = hang
    first = await relay.submit(idempotency_key="order-9")
    assert first.status_code == 503
    assert (await relay.submit(idempotency_key="order-9")).status_code == 409  # truly in flight
    relay.clock.advance(301.0)
    await relay.poller.run_once()
    failed = await relay.task(first.json()["error"]["task_id"])
    assert failed.failure_reason == "submit_interrupted"
    relay.grsai.on_submit = None
    retry = await relay.submit(idempotency_key="order-9")
    assert retry.status_code != 409, retry.text


async def test_poll_round_survives_answer_with_lone_surrogate(poll_relay: Relay) -> None:
    """A poll answer carrying an unpaired surrogate escape does not crash the poller round."""
    relay = poll_relay
    task, upstream_id = await submitted(relay)
    raw = wrapped(task_object(upstream_id, "failed", 0, error="SURROGATE"))
    body = json.dumps(raw).replace("SURROGATE", "\\ud800").encode()

    async def odd(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    relay.grsai.on_poll = odd
    relay.clock.advance(FIRST_DELAY)
    assert await relay.poller.run_once() == 1
    assert (await relay.task(task.id)).status in ("pending", "failed")
