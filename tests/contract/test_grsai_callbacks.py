"""The contract for GrsAI-shaped callbacks: a task's `callback_format` is stored, and the outbox
holds one progress event per progress value a GrsAI-shaped task reaches (the final event still
waits for the copies), and nothing new for a relay-shaped task's progress."""

from __future__ import annotations

import dataclasses

from service.domain.observation import Observation, ResultFile
from service.domain.outbox import PROGRESS_EVENT, delivery_id
from service.domain.records import Attempt, Delivery
from service.domain.transitions import decide
from service.storage import Storage
from tests.contract.conftest import NOW, make_task

HOOK = "https://client.test/grsai/callback"


async def observe(storage: Storage, n: int, at: float, status: str, progress: int) -> str | None:
    """Apply what GrsAI said about `task_<n>` at `at` through the state machine; the outcome."""
    results = (ResultFile("https://f.test/a.png", 4, 3),) if status == "succeeded" else ()
    obs = Observation(f"up-{n}", status, progress, results)  # type: ignore[arg-type]
    decision = await storage.apply(
        f"task_{n}", lambda task: decide(task, obs, at, copy_results=True), None
    )
    return None if decision is None else decision.outcome


async def outbox(storage: Storage, task_id: str) -> list[Delivery]:
    """The task's deliveries, oldest first."""
    return [delivery for delivery, _ in await storage.deliveries_of(task_id)]


async def test_the_callback_format_is_stored(storage: Storage) -> None:
    """A task keeps its callback format; one stored without it is relay-shaped."""
    await storage.insert_task(make_task(1, callback_url=HOOK, callback_format="grsai"))
    await storage.insert_task(make_task(2, callback_url=HOOK))
    grsai, relay = await storage.task("task_1"), await storage.task("task_2")
    assert grsai is not None
    assert relay is not None
    assert (grsai.callback_format, relay.callback_format) == ("grsai", "relay")
    (listed, *_) = await storage.list_tasks(
        "key_main", status=None, model=None, limit=1, before_seq=None
    )
    assert (listed.id, listed.callback_format) == ("task_2", "relay")


async def test_progress_events_are_queued_once_per_new_value(storage: Storage) -> None:
    """Running at 10, 10 again, 40, then 20 (older news): two progress events, each under the
    id of its value, due at once; repeats and stale news queue nothing."""
    await storage.insert_task(make_task(1, callback_url=HOOK, callback_format="grsai"))
    outcomes = [
        await observe(storage, 1, NOW + at, "running", progress)
        for at, progress in ((1, 10), (2, 10), (3, 40), (4, 20))
    ]
    assert outcomes == ["applied", "duplicate", "applied", "stale"]
    found = await outbox(storage, "task_1")
    assert [(d.event_type, d.progress, d.id) for d in found] == [
        (PROGRESS_EVENT, 10, delivery_id("task_1", PROGRESS_EVENT, 10)),
        (PROGRESS_EVENT, 40, delivery_id("task_1", PROGRESS_EVENT, 40)),
    ]
    assert [(d.status, d.next_attempt_at, d.url) for d in found] == [
        ("pending", NOW + 1, HOOK),
        ("pending", NOW + 3, HOOK),
    ]


async def test_the_final_event_follows_the_progress_events_after_the_copies(
    storage: Storage,
) -> None:
    """A GrsAI-shaped success is announced once its copy settled, after its progress events,
    and a repeated final callback queues nothing new."""
    await storage.insert_task(make_task(1, callback_url=HOOK, callback_format="grsai"))
    await observe(storage, 1, NOW + 1, "running", 50)
    assert await observe(storage, 1, NOW + 2, "succeeded", 100) == "applied"
    assert [d.progress for d in await outbox(storage, "task_1")] == [50]  # the copy is pending
    (job,) = await storage.claim_assets(NOW + 2, 5, NOW + 60)
    stored = dataclasses.replace(
        job, status="stored", attempts=1, next_attempt_at=None, sha256="a" * 64, stored_at=NOW + 3
    )
    await storage.save_asset(stored, NOW + 3)
    assert await observe(storage, 1, NOW + 4, "succeeded", 100) == "duplicate"
    found = await outbox(storage, "task_1")
    assert [(d.event_type, d.progress, d.event_at) for d in found] == [
        (PROGRESS_EVENT, 50, NOW + 1),
        ("task.succeeded", None, NOW + 3),
    ]
    redelivered = await storage.redeliver("task_1", NOW + 9)  # the final one, never a progress
    assert redelivered is not None
    assert (redelivered.event_type, redelivered.progress) == ("task.succeeded", None)


async def test_a_relay_shaped_tasks_progress_queues_nothing(storage: Storage) -> None:
    """The relay's own callbacks announce the end only, as before."""
    await storage.insert_task(make_task(1, callback_url=HOOK))
    await observe(storage, 1, NOW + 1, "running", 10)
    await observe(storage, 1, NOW + 2, "running", 60)
    assert await outbox(storage, "task_1") == []
    await observe(storage, 1, NOW + 3, "failed", 60)
    assert [(d.event_type, d.progress) for d in await outbox(storage, "task_1")] == [
        ("task.failed", None)
    ]


async def test_a_grsai_shaped_task_without_a_url_queues_nothing(storage: Storage) -> None:
    """No callback URL, nobody to tell."""
    await storage.insert_task(make_task(1, callback_format="grsai"))
    await observe(storage, 1, NOW + 1, "running", 10)
    await observe(storage, 1, NOW + 2, "failed", 10)
    assert await outbox(storage, "task_1") == []


async def test_a_410_retires_the_progress_events_to_its_url(storage: Storage) -> None:
    """Gone: a pending progress event to that URL dies with the one that met the 410, and a
    later one is dead at once."""
    await storage.insert_task(make_task(1, callback_url=HOOK, callback_format="grsai"))
    await observe(storage, 1, NOW + 1, "running", 10)
    await observe(storage, 1, NOW + 2, "running", 20)
    first, second = await outbox(storage, "task_1")
    dead = dataclasses.replace(
        first, status="dead", attempts=1, next_attempt_at=None, dead_at=NOW + 5
    )
    await storage.record_attempt(dead, Attempt(first.id, NOW + 5, 410, 1.0, "HTTP 410"), gone=True)
    await observe(storage, 1, NOW + 6, "running", 30)
    assert [(d.progress, d.status) for d in await outbox(storage, "task_1")] == [
        (10, "dead"),
        (20, "dead"),
        (30, "dead"),
    ]
    assert second.status == "pending"
