"""Live status: the in-process hub (`jobs.watch`), the storage hook, and the notice payloads."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from service.domain.records import Task
from service.jobs.watch import StreamSlots, TaskWatch
from service.storage.base import SEEN_COLUMNS, seen_change
from service.storage.postgres.core import NOTICE_BYTES, TASK_NOTICE, task_notices

HANG = 30.0  # a hang guard, never a measure


async def test_a_change_wakes_the_watchers_of_that_task_only() -> None:
    """`changed(id)` wakes every watcher of that id and none of another."""
    hub = TaskWatch()
    with hub.watch("a") as one, hub.watch("a") as two, hub.watch("b") as other:
        hub.changed("a")
        assert await one.wait(HANG)
        assert await two.wait(HANG)
        assert not await other.wait(0.0)


async def test_a_group_wakes_on_any_member_and_names_it() -> None:
    """`watch_all` returns on a change of any of its tasks, names the ones that changed (all of
    them when any task may have changed), and leaves no entry behind."""
    hub = TaskWatch()
    with hub.watch_all(["a", "b", "a"]) as group:
        assert hub.watchers == 2
        assert not await group.wait(0.0)
        hub.changed("c")
        assert not await group.wait(0.0)
        hub.changed("b")
        assert await group.wait(HANG)
        assert group.woken == {"b"}
        group.woken.clear()
        hub.changed(None)
        assert await group.wait(HANG)
        assert group.woken == {"a", "b"}
        hub.close()
        assert group.closed
    assert hub.tasks == 0


async def test_a_change_before_the_wait_is_not_lost() -> None:
    """A change between two waits is remembered: the next wait returns at once, once."""
    hub = TaskWatch()
    with hub.watch("a") as watcher:
        hub.changed("a")
        hub.changed("a")
        assert await watcher.wait(0.0)
        assert not await watcher.wait(0.0)


async def test_a_waiter_is_woken_while_it_waits() -> None:
    """A watcher blocked in `wait` returns when the change comes."""
    hub = TaskWatch()
    with hub.watch("a") as watcher:
        waiting = asyncio.create_task(watcher.wait(HANG))
        await asyncio.sleep(0)
        hub.changed("a")
        assert await asyncio.wait_for(waiting, HANG)


async def test_none_wakes_every_watcher() -> None:
    """`changed(None)` (notices lost) wakes every watcher of every task."""
    hub = TaskWatch()
    with hub.watch("a") as one, hub.watch("b") as two:
        hub.changed(None)
        assert await one.wait(0.0)
        assert await two.wait(0.0)


async def test_entries_leave_with_their_last_watcher() -> None:
    """The hub holds an entry only while someone watches that task (no leak)."""
    hub = TaskWatch()
    with hub.watch("a"):
        with hub.watch("a"), hub.watch("b"):
            assert (hub.tasks, hub.watchers) == (2, 3)
        assert (hub.tasks, hub.watchers) == (1, 1)
    assert (hub.tasks, hub.watchers) == (0, 0)
    hub.changed("a")  # nobody watches: nothing to do, nothing created
    assert hub.tasks == 0


async def test_close_wakes_everyone_now_and_later_until_opened() -> None:
    """`close` wakes every watcher, and a watcher made after it at once; `open` resets."""
    hub = TaskWatch()
    with hub.watch("a") as early:
        hub.close()
        assert await early.wait(HANG)
        assert early.closed
        with hub.watch("b") as late:
            assert await late.wait(0.0)
            assert late.closed
    hub.open()
    with hub.watch("a") as again:
        assert not again.closed
        assert not await again.wait(0.0)


def test_stream_slots_count_per_key_and_forget_closed_keys() -> None:
    """At most `limit` per key; a slot given back can be taken again; no entry is left."""
    slots = StreamSlots(2)
    assert slots.take("k")
    assert slots.take("k")
    assert not slots.take("k")
    assert slots.take("other")
    slots.give_back("k")
    assert slots.open_streams("k") == 1
    assert slots.take("k")
    for key in ("k", "k", "other"):
        slots.give_back(key)
    assert slots.open_streams("k") == 0
    assert not slots._open


def test_seen_columns_are_exactly_what_a_client_sees() -> None:
    """Changing a column outside SEEN_COLUMNS leaves `Task.to_json` unchanged; changing one
    inside changes it (so the storage hook fires exactly for visible changes)."""
    task = Task("task_1", "key_1", "m", "/e", "callback", {"p": 1}, 1.0, 2.0)
    samples: dict[str, Any] = {
        "status": "running", "progress": 5, "model": "n", "upstream_id": "u", "input": {"p": 2},
        "results": [{"url": None}], "failure_reason": "x", "error": "y", "metadata": {"a": 1},
        "callback_url": "https://c.example", "callback_format": "grsai", "created_at": 3.0,
        "updated_at": 4.0,
        "completed_at": 5.0, "submit_state": "submitted", "idempotency_key": "i",
        "request_hash": "h", "token_hash": b"t", "last_event_at": 6.0, "next_poll_at": 7.0,
        "poll_attempts": 3, "seq": 9, "mode": "poll", "endpoint": "/f", "api_key_id": "key_2",
        "id": "task_2",
    }  # fmt: skip
    assert {f.name for f in dataclasses.fields(Task)} == samples.keys()
    for column, value in samples.items():
        changed = dataclasses.replace(task, **{column: value})
        visible = changed.to_json() != task.to_json()
        if column == "id":
            continue  # never changed by a write
        assert visible == (column in SEEN_COLUMNS), column
        assert seen_change({column: value}) == (column in SEEN_COLUMNS)


def test_task_notices_fit_the_payload_limit() -> None:
    """Many ids are split over as few notices as fit; each names its ids after `task:`."""
    ids = [f"task_{n:022d}" for n in range(1000)]
    notices = task_notices(ids)
    assert all(n.startswith(TASK_NOTICE) and len(n.encode()) <= NOTICE_BYTES for n in notices)
    assert [i for n in notices for i in n[len(TASK_NOTICE) :].split(",")] == ids
    assert len(notices) == 5
    assert task_notices([]) == []
