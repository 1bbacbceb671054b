"""The contract for keys, tasks, `apply` and the poll queue."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from service.domain.outbox import delivery_id
from service.domain.records import ApiKey, Task
from service.domain.transitions import Decision
from service.storage import DuplicateIdempotencyKey, Event, Storage
from tests.contract.conftest import KEY, NOW, OTHER, Reopen, finishing, key_hash, make_task


def bump(task: Task) -> Decision:
    """One more poll attempt: a read-modify-write that must not lose updates."""
    return Decision("applied", {"poll_attempts": task.poll_attempts + 1})


def same(found: Task | None, task: Task) -> bool:
    """`found` is `task` as stored (the backend numbers tasks in `seq`)."""
    return (
        found is not None and found.seq is not None and dataclasses.replace(found, seq=None) == task
    )


async def test_an_open_database_answers_and_has_a_schema(storage: Storage, reopen: Reopen) -> None:
    """`ping` passes, the schema is migrated, and a second instance sees the same version."""
    await storage.ping()
    version = await storage.schema_version()
    assert version >= 1
    assert await (await reopen()).schema_version() == version


async def test_api_keys_are_listed_found_and_revoked(storage: Storage) -> None:
    """Keys list newest first, are found by hash while active, and revoke by id or prefix once."""
    demo = ApiKey("key_demo", "demo", "grk_demo0000", NOW + 2, demo=True)
    await storage.create_api_key(demo, key_hash(demo))
    assert [k.id for k in await storage.list_api_keys()] == [demo.id, OTHER.id, KEY.id]
    assert await storage.api_key_by_hash(key_hash(demo)) == demo
    assert await storage.api_key_by_hash(b"\0" * 32) is None
    assert await storage.revoke_api_key(demo.id, NOW + 5)
    assert await storage.revoke_api_key(OTHER.prefix, NOW + 6)
    assert not await storage.revoke_api_key(demo.id, NOW + 7)  # already revoked
    assert await storage.api_key_by_hash(key_hash(demo)) is None
    assert await storage.api_key_by_id(KEY.id) == KEY
    assert await storage.api_key_by_id(demo.id) is None  # revoked
    assert await storage.api_key_by_id("key_none") is None
    revoked = {k.id: k.revoked_at for k in await storage.list_api_keys()}
    assert revoked == {demo.id: NOW + 5, OTHER.id: NOW + 6, KEY.id: None}


async def test_a_task_reads_back_as_it_was_stored(storage: Storage) -> None:
    """Every field comes back as inserted (JSON payload, bytes), and only to its owner."""
    task = make_task(
        1,
        input={"model": "m", "prompt": "ü€😀", "urls": ["https://a.test/x"]},
        metadata={"nested": {"list": [1, 2.5, None, True]}},
        results=[{"url": "https://r.test/a.png", "width": 1, "height": 2}],
        token_hash=b"\x00\xff" * 16,
        idempotency_key="order-1",
        request_hash="abc",
        callback_url="https://client.test/done",
    )
    await storage.insert_task(task)
    assert same(await storage.task(task.id), task)
    assert same(await storage.task(task.id, KEY.id), task)
    assert await storage.task(task.id, OTHER.id) is None
    assert same(await storage.task_by_idempotency_key(KEY.id, "order-1"), task)
    assert await storage.task_by_idempotency_key(OTHER.id, "order-1") is None
    ref = await storage.task_by_token_hash(b"\x00\xff" * 16)
    assert ref is not None
    assert (ref.id, ref.upstream_id, ref.status) == (task.id, "up-1", "pending")
    assert await storage.task_by_token_hash(b"\x01" * 32) is None
    assert await storage.task("task_nope") is None


async def test_an_idempotency_key_is_taken_once_per_api_key(storage: Storage) -> None:
    """A second task with the same (API key, Idempotency-Key) is refused; other pairs are not."""
    await storage.insert_task(make_task(1, idempotency_key="k"))
    with pytest.raises(DuplicateIdempotencyKey):
        await storage.insert_task(make_task(2, idempotency_key="k"))
    await storage.insert_task(make_task(3, idempotency_key="k", api_key_id=OTHER.id))
    await storage.insert_task(make_task(4))
    await storage.insert_task(make_task(5))
    assert await storage.task("task_2") is None
    found = await storage.task_by_idempotency_key(KEY.id, "k")
    assert found is not None
    assert found.id == "task_1"


async def test_tasks_list_newest_first_by_keyset_and_filters(storage: Storage) -> None:
    """`list_tasks` pages the owner's tasks newest first; `list_all_tasks` spans every key."""
    for n in range(6):
        model = "flux" if n % 2 else "nano-banana"
        await storage.insert_task(
            make_task(n, model=model, status="running" if n > 3 else "pending")
        )
    await storage.insert_task(make_task("x", api_key_id=OTHER.id))
    page = await storage.list_tasks(KEY.id, status=None, model=None, limit=4, before_seq=None)
    assert [t.id for t in page] == ["task_5", "task_4", "task_3", "task_2"]
    assert page[-1].seq is not None
    rest = await storage.list_tasks(
        KEY.id, status=None, model=None, limit=4, before_seq=page[-1].seq
    )
    assert [t.id for t in rest] == ["task_1", "task_0"]
    flux = await storage.list_tasks(KEY.id, status=None, model="flux", limit=9, before_seq=None)
    assert [t.id for t in flux] == ["task_5", "task_3", "task_1"]
    running = await storage.list_tasks(
        KEY.id, status="running", model=None, limit=9, before_seq=None
    )
    assert [t.id for t in running] == ["task_5", "task_4"]
    everyone = await storage.list_all_tasks(limit=3)
    assert [t.id for t in everyone] == ["task_x", "task_5", "task_4"]
    assert [t.id for t in await storage.list_all_tasks(api_key_id=OTHER.id)] == ["task_x"]
    pending = await storage.list_all_tasks(status="pending", model="nano-banana")
    assert [t.id for t in pending] == ["task_x", "task_2", "task_0"]


async def test_apply_stores_the_changes_and_the_event_with_its_outcome(storage: Storage) -> None:
    """The changes land; the event gets the decision's outcome and detail unless it has its own."""
    await storage.insert_task(make_task(1))
    seen: list[Task] = []

    def running(task: Task) -> Decision:
        seen.append(task)
        return Decision("applied", {"status": "running", "progress": 40}, detail="news")

    decision = await storage.apply("task_1", running, Event("task_1", "callback", NOW, b"a"))
    assert decision is not None
    assert (decision.outcome, decision.changes["progress"]) == ("applied", 40)
    assert (seen[-1].status, seen[-1].upstream_id, seen[-1].mode) == ("pending", "up-1", "poll")
    stale = Event("task_1", "poll", NOW + 1, b"b", outcome="rejected", detail="forged")
    await storage.apply("task_1", lambda _: Decision("stale", detail="old"), stale)
    stored = await storage.task("task_1")
    assert stored is not None
    assert (stored.status, stored.progress) == ("running", 40)
    events = await storage.events("task_1")
    assert [(e.source, e.received_at, e.body, e.outcome, e.detail) for e in events] == [
        ("callback", NOW, b"a", "applied", "news"),
        ("poll", NOW + 1, b"b", "rejected", "forged"),
    ]


async def test_apply_to_a_missing_task_returns_none_and_stores_nothing(storage: Storage) -> None:
    """No task: no decision, no event."""
    assert await storage.apply("task_nope", bump, Event("task_nope", "poll", NOW, b"x")) is None
    assert await storage.events("task_nope") == []


async def test_a_decide_that_raises_fails_alone(storage: Storage) -> None:
    """A decide raising among concurrent applies fails only its caller and leaves nothing."""
    await storage.insert_task(make_task(1))

    def explode(task: Task) -> Decision:
        raise ValueError("decide blew up")

    applies = [
        storage.apply(
            "task_1", explode if n == 3 else bump, Event("task_1", "poll", NOW, b"%d" % n)
        )
        for n in range(8)
    ]
    results = await asyncio.gather(*applies, return_exceptions=True)
    assert isinstance(results[3], ValueError)
    assert all(not isinstance(r, BaseException) for n, r in enumerate(results) if n != 3)
    stored = await storage.task("task_1")
    assert stored is not None
    assert stored.poll_attempts == 7
    assert sorted(e.body for e in await storage.events("task_1")) == sorted(
        b"%d" % n for n in range(8) if n != 3
    )


async def test_concurrent_applies_lose_no_update(storage: Storage) -> None:
    """200 concurrent read-modify-write applies each see the state the previous one left."""
    await storage.insert_task(make_task(1))
    decisions = await asyncio.gather(*(storage.apply("task_1", bump, None) for _ in range(200)))
    seen = sorted(d.changes["poll_attempts"] for d in decisions if d is not None)
    assert seen == list(range(1, 201))
    stored = await storage.task("task_1")
    assert stored is not None
    assert stored.poll_attempts == 200


async def test_apply_queues_the_copies_and_the_final_event_it_decided(storage: Storage) -> None:
    """A success queues copy jobs 0..n-1 and no event yet; a failure with a callback queues its
    final event once, under the event's delivery id."""
    hook = "https://client.test/done"
    await storage.insert_task(make_task(1, callback_url=hook))
    await storage.insert_task(make_task(2, callback_url=hook))
    await storage.apply(
        "task_1", finishing("succeeded", NOW + 5, "https://f.test/a", "https://f.test/b"), None
    )
    jobs = await storage.assets_of("task_1")
    assert [(a.n, a.upstream_url, a.status) for a in jobs] == [
        (0, "https://f.test/a", "pending"),
        (1, "https://f.test/b", "pending"),
    ]
    assert await storage.deliveries_of("task_1") == []
    for _ in range(2):  # the same final event twice: queued once
        await storage.apply("task_2", finishing("failed", NOW + 6), None)
    (delivery, attempts), *others = await storage.deliveries_of("task_2")
    assert (others, attempts) == ([], [])
    assert (delivery.id, delivery.event_type, delivery.url) == (
        delivery_id("task_2", "task.failed"),
        "task.failed",
        hook,
    )
    assert (delivery.status, delivery.next_attempt_at, delivery.event_at) == (
        "pending",
        NOW + 6,
        NOW + 6,
    )
    assert delivery.api_key_id == KEY.id


async def test_claiming_due_polls_leases_them(storage: Storage) -> None:
    """`claim_due` takes due tasks soonest first up to the limit and leases them."""
    for n, due in enumerate((NOW - 5, NOW - 9, NOW + 60, None, NOW - 1)):
        await storage.insert_task(make_task(n, next_poll_at=due))
    claimed = await storage.claim_due(NOW, 2, NOW + 30)
    assert [t.id for t in claimed] == ["task_1", "task_0"]
    assert [t.id for t in await storage.claim_due(NOW, 10, NOW + 30)] == ["task_4"]
    assert await storage.claim_due(NOW, 10, NOW + 30) == []
    leased = await storage.task("task_1")
    assert leased is not None
    assert leased.next_poll_at == NOW + 30
    again = await storage.claim_due(NOW + 30, 10, NOW + 90)  # leases ended: due again
    assert sorted(t.id for t in again) == ["task_0", "task_1", "task_4"]


async def test_status_counts_and_queue_stats(storage: Storage) -> None:
    """Tasks count by status; each queue reports its due jobs and the oldest one's age."""
    await storage.insert_task(make_task(1, next_poll_at=NOW - 10))
    await storage.insert_task(make_task(2, next_poll_at=NOW - 4, status="running"))
    await storage.insert_task(make_task(3, next_poll_at=NOW + 100))
    assert await storage.status_counts() == {"pending": 2, "running": 1}
    stats = await storage.queue_stats(NOW)
    assert stats["poller"] == (2, 10.0)
    assert stats["copier"] == (0, 0.0)
    assert stats["deliverer"] == (0, 0.0)


async def test_text_with_a_nul_byte_is_looked_up_as_missing_and_stored(storage: Storage) -> None:
    """A NUL in a looked-up id finds nothing; a NUL in stored text never fails the write."""
    await storage.insert_task(make_task(1))
    assert await storage.task("task_1\x00") is None
    assert await storage.task_by_idempotency_key(KEY.id, "k\x00") is None
    assert (
        await storage.list_tasks(KEY.id, status=None, model="m\x00", limit=5, before_seq=None) == []
    )

    def fail(task: Task) -> Decision:
        return Decision("applied", {"status": "failed", "error": "bad\x00byte"})

    assert await storage.apply("task_1", fail, None) is not None
    stored = await storage.task("task_1")
    assert stored is not None
    assert stored.error is not None
    assert stored.error.replace("\ufffd", "\x00") == "bad\x00byte"
