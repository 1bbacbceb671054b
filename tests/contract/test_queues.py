"""The contract for the copy queue, the delivery outbox, signing secrets, and concurrent claims."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from service.domain.outbox import GONE, GONE_BEFORE
from service.domain.records import Asset, Attempt, Delivery
from service.storage import Storage
from tests.contract.conftest import KEY, NOW, OTHER, finishing, make_task

HOOK = "https://client.test/done"


async def succeeded(storage: Storage, n: int, *urls: str, hook: str | None = HOOK) -> str:
    """A task that succeeded at NOW with copies of `urls` queued; return its id."""
    await storage.insert_task(make_task(n, callback_url=hook))
    await storage.apply(f"task_{n}", finishing("succeeded", NOW, *urls), None)
    return f"task_{n}"


async def failed(storage: Storage, n: int, hook: str = HOOK, at: float = NOW) -> Delivery:
    """A task that failed at `at` with a callback; return its queued final event."""
    await storage.insert_task(make_task(n, callback_url=hook))
    await storage.apply(f"task_{n}", finishing("failed", at), None)
    (delivery, _), *_ = await storage.deliveries_of(f"task_{n}")
    return delivery


def stored(job: Asset, sha: str, at: float) -> Asset:
    """`job` copied: stored under `sha` at `at`."""
    return dataclasses.replace(
        job, status="stored", attempts=job.attempts + 1, next_attempt_at=None, sha256=sha,
        content_type="image/png", bytes=10, width=4, height=3, stored_at=at,
    )  # fmt: skip


async def test_copy_jobs_are_claimed_and_leased(storage: Storage) -> None:
    """`claim_assets` takes due jobs up to the limit and leases them until they are due again."""
    task_id = await succeeded(storage, 1, "https://f.test/a", "https://f.test/b")
    first = await storage.claim_assets(NOW, 1, NOW + 60)
    assert [(j.task_id, j.n, j.next_attempt_at) for j in first] == [(task_id, 0, NOW + 60)]
    assert [j.n for j in await storage.claim_assets(NOW, 5, NOW + 60)] == [1]
    assert await storage.claim_assets(NOW + 59, 5, NOW + 120) == []
    assert sorted(j.n for j in await storage.claim_assets(NOW + 60, 5, NOW + 120)) == [0, 1]


async def test_a_saved_copy_shows_in_the_tasks_results(storage: Storage) -> None:
    """A stored copy is recorded and its `results` entry points to our copy; a failed one says
    why and shows no copy."""
    task_id = await succeeded(storage, 1, "https://f.test/a", "https://f.test/b")
    one, two = await storage.claim_assets(NOW, 5, NOW + 60)
    await storage.save_asset(stored(one, "a" * 64, NOW + 1), NOW + 1)
    gave_up = dataclasses.replace(
        two, status="failed", attempts=1, error="404", next_attempt_at=None
    )
    await storage.save_asset(gave_up, NOW + 2)
    assert await storage.asset(task_id, 0) == stored(one, "a" * 64, NOW + 1)
    assert await storage.asset(task_id, 7) is None
    task = await storage.task(task_id)
    assert task is not None
    first, second = task.results
    assert (first["url"], first["sha256"], first["width"], first["stored_at"]) == (
        f"/v1/tasks/{task_id}/results/0",
        "a" * 64,
        4,
        NOW + 1,
    )
    assert first["asset"] == {"status": "stored", "error": None, "attempts": 1}
    assert (second["url"], second["asset"]["status"], second["asset"]["error"]) == (
        None,
        "failed",
        "404",
    )


async def test_the_final_event_waits_for_the_last_copy(storage: Storage) -> None:
    """A succeeded task's client is told once every copy settled, never before."""
    task_id = await succeeded(storage, 1, "https://f.test/a", "https://f.test/b")
    one, two = await storage.claim_assets(NOW, 5, NOW + 60)
    await storage.save_asset(stored(one, "a" * 64, NOW + 1), NOW + 1)
    await storage.save_asset(dataclasses.replace(two, attempts=1, error="timeout"), NOW + 1)
    assert await storage.deliveries_of(task_id) == []  # one copy still pending
    await storage.save_asset(stored(two, "b" * 64, NOW + 3), NOW + 3)
    (delivery, _), *others = await storage.deliveries_of(task_id)
    assert (others, delivery.event_type, delivery.status) == ([], "task.succeeded", "pending")
    assert delivery.next_attempt_at == NOW + 3
    quiet = await succeeded(storage, 2, "https://f.test/c", hook=None)
    (job,) = await storage.claim_assets(NOW, 5, NOW + 60)
    await storage.save_asset(stored(job, "c" * 64, NOW + 4), NOW + 4)
    assert await storage.deliveries_of(quiet) == []  # no callback_url, nobody to tell


async def test_signing_secrets_rotate(storage: Storage) -> None:
    """Secrets sign newest first; a rotation lets the older ones sign until their retirement."""
    await storage.add_signing_secret(KEY.id, "whsec_old", NOW, retire_others_at=None)
    await storage.add_signing_secret(KEY.id, "whsec_new", NOW + 10, retire_others_at=NOW + 100)
    assert await storage.signing_secrets(KEY.id, NOW + 50) == ["whsec_new", "whsec_old"]
    assert await storage.signing_secrets(KEY.id, NOW + 100) == ["whsec_new"]
    assert await storage.signing_secrets(OTHER.id, NOW) == []


async def test_deliveries_are_claimed_fairly_per_host(storage: Storage) -> None:
    """At most `free` in all and `per_host` per host (counting those already sending)."""
    for n in range(4):
        await failed(storage, n, "https://slow.test/hook", at=NOW + n)
    for n in range(4, 6):
        await failed(storage, n, "https://fast.test/hook", at=NOW + n)
    claimed = await storage.claim_deliveries(NOW + 10, NOW + 70, 5, {"slow.test": 1}, 2)
    hosts = sorted(d.url for d in claimed)
    assert hosts == ["https://fast.test/hook"] * 2 + ["https://slow.test/hook"]
    assert all(d.next_attempt_at == NOW + 70 for d in claimed)
    rest = await storage.claim_deliveries(NOW + 10, NOW + 70, 9, {}, 9)
    assert len(rest) == 3
    assert {d.id for d in rest}.isdisjoint(d.id for d in claimed)


async def test_attempts_are_recorded_with_the_deliverys_state(storage: Storage) -> None:
    """`record_attempt` stores the attempt and the delivery as the deliverer left it."""
    delivery = await failed(storage, 1)
    sent = dataclasses.replace(
        delivery, status="delivered", attempts=1, next_attempt_at=None, delivered_at=NOW + 1
    )
    await storage.record_attempt(sent, Attempt(delivery.id, NOW + 1, 200, 12.5, None), gone=False)
    ((found, attempts),) = await storage.deliveries_of("task_1")
    assert found == sent
    assert attempts == [Attempt(delivery.id, NOW + 1, 200, 12.5, None)]


async def test_a_410_retires_its_url(storage: Storage) -> None:
    """Gone: every pending delivery to that URL dies, and a later event to it is dead at once."""
    gone_hook, other_hook = "https://gone.test/hook", "https://other.test/hook"
    first = await failed(storage, 1, gone_hook)
    await failed(storage, 2, gone_hook)
    await failed(storage, 3, other_hook)
    dead = dataclasses.replace(first, status="dead", attempts=1, next_attempt_at=None)
    dead = dataclasses.replace(dead, dead_at=NOW + 5, last_error="HTTP 410")
    await storage.record_attempt(dead, Attempt(first.id, NOW + 5, 410, 3.0, "HTTP 410"), gone=True)
    ((second, _),) = await storage.deliveries_of("task_2")
    assert (second.status, second.next_attempt_at, second.dead_at, second.last_error) == (
        "dead",
        None,
        NOW + 5,
        GONE,
    )
    ((untouched, _),) = await storage.deliveries_of("task_3")
    assert untouched.status == "pending"
    later = await failed(storage, 4, gone_hook, at=NOW + 9)
    assert (later.status, later.next_attempt_at, later.dead_at, later.last_error) == (
        "dead",
        None,
        NOW + 9,
        GONE_BEFORE,
    )


async def test_redelivery_and_replay(storage: Storage) -> None:
    """Redeliver re-queues a final event under its id (its URL no longer gone); replay re-queues
    the key's dead deliveries since a time, except to gone URLs."""
    gone_hook = "https://gone.test/hook"
    first = await failed(storage, 1, gone_hook)
    dead = dataclasses.replace(first, status="dead", attempts=1, next_attempt_at=None)
    dead = dataclasses.replace(dead, dead_at=NOW + 5)
    await storage.record_attempt(dead, Attempt(first.id, NOW + 5, 410, 1.0, "HTTP 410"), gone=True)
    await failed(storage, 2, gone_hook)  # dead at once: gone before
    other = await failed(storage, 3, "https://other.test/hook")
    died = dataclasses.replace(other, status="dead", attempts=8, next_attempt_at=None)
    await storage.record_attempt(
        dataclasses.replace(died, dead_at=NOW + 7),
        Attempt(other.id, NOW + 7, 500, 1.0, "500"),
        gone=False,
    )
    assert await storage.replay_dead(KEY.id, NOW + 6, NOW + 20) == 1  # not to the gone URL
    ((replayed, _),) = await storage.deliveries_of("task_3")
    assert (replayed.status, replayed.next_attempt_at, replayed.dead_at) == (
        "pending",
        NOW + 20,
        None,
    )
    assert await storage.replay_dead(OTHER.id, 0.0, NOW + 20) == 0
    again = await storage.redeliver("task_1", NOW + 30)
    assert again is not None
    assert (again.id, again.status, again.next_attempt_at) == (first.id, "pending", NOW + 30)
    assert await storage.replay_dead(KEY.id, 0.0, NOW + 31) == 1  # task_2: its URL is back
    await storage.insert_task(make_task(9, callback_url=None))
    assert await storage.redeliver("task_9", NOW) is None  # no final event to send again


async def claimed_by_many(claim: Callable[[], Awaitable[list[str]]], claimers: int) -> list[str]:
    """Every id claimed by `claimers` concurrent rounds of `claim`."""
    rounds = await asyncio.gather(*(claim() for _ in range(claimers)))
    return [item for found in rounds for item in found]


async def test_concurrent_claims_never_take_a_job_twice(storage: Storage) -> None:
    """Many claimers at once: every due poll, copy and delivery is claimed exactly once."""
    for n in range(30):
        await storage.insert_task(make_task(f"p{n}", next_poll_at=NOW - n))
    for n in range(10):
        await succeeded(
            storage, 100 + n, "https://f.test/a", "https://f.test/b", "https://f.test/c"
        )
    for n in range(30):
        await failed(storage, 200 + n, f"https://h{n % 7}.test/hook")

    async def polls() -> list[str]:
        return [t.id for t in await storage.claim_due(NOW, 4, NOW + 60)]

    async def copies() -> list[str]:
        return [f"{a.task_id}/{a.n}" for a in await storage.claim_assets(NOW, 4, NOW + 60)]

    async def deliveries() -> list[str]:
        return [d.id for d in await storage.claim_deliveries(NOW, NOW + 60, 4, {}, 100)]

    for claim, total in ((polls, 30), (copies, 30), (deliveries, 30)):
        taken = await claimed_by_many(claim, 12)  # 48 slots for 30 jobs
        assert len(taken) == len(set(taken)) == total


async def test_queue_stats_count_due_copies_and_deliveries(storage: Storage) -> None:
    """Due copy jobs and due deliveries show in `queue_stats`, with the oldest one's age."""
    await succeeded(storage, 1, "https://f.test/a", "https://f.test/b", hook=None)
    await failed(storage, 2, at=NOW + 4)
    stats = await storage.queue_stats(NOW + 10)
    assert (stats["copier"][0], stats["deliverer"]) == (2, (1, 6.0))
    assert stats["copier"][1] >= 10.0  # new copy jobs are due at once


async def test_switch_to_polling_takes_open_callback_tasks_only(storage: Storage) -> None:
    """Open callback-mode tasks become poll-mode tasks due now; others keep mode and time."""
    silent = make_task(1, mode="callback", next_poll_at=NOW + 60)
    due = make_task(2, mode="callback", next_poll_at=NOW - 5)
    polled = make_task(3, mode="poll", next_poll_at=NOW + 30)
    for task in (silent, due, polled, make_task(4, mode="callback", next_poll_at=NOW + 60)):
        await storage.insert_task(task)
    await storage.apply("task_4", finishing("succeeded", NOW), None)
    assert await storage.switch_to_polling(NOW) == 1
    found = {n: await storage.task(f"task_{n}") for n in (1, 2, 3, 4)}
    modes = {n: (t.mode, t.next_poll_at) for n, t in found.items() if t is not None}
    assert modes[1] == ("poll", NOW)
    assert modes[2] == ("callback", NOW - 5)
    assert modes[3] == ("poll", NOW + 30)
    assert modes[4][0] == "callback"
    assert await storage.switch_to_polling(NOW) == 0
    assert [t.id for t in await storage.claim_due(NOW, 10, NOW + 60)] == ["task_2", "task_1"]
