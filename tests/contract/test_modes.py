"""The contract for stream mode: a third task mode, and stream frames as stored events."""

from __future__ import annotations

from service.domain.transitions import Decision
from service.storage import Event, Storage
from tests.contract.conftest import NOW, make_task


async def test_a_stream_mode_task_is_stored_listed_and_polled(storage: Storage) -> None:
    """A task in stream mode reads back in stream mode, lists, and is claimed when due."""
    task = make_task(1, mode="stream", next_poll_at=NOW - 1)
    await storage.insert_task(task)
    found = await storage.task(task.id)
    assert found is not None
    assert found.mode == "stream"
    assert [t.mode for t in await storage.list_all_tasks()] == ["stream"]
    assert [t.id for t in await storage.claim_due(NOW, 10, NOW + 60)] == [task.id]


async def test_stream_frames_are_events_in_order(storage: Storage) -> None:
    """Frames stored with `source` stream keep their bytes, outcome and detail, in order."""
    task = make_task(2, mode="stream")
    await storage.insert_task(task)
    frames = [
        Event(task.id, "stream", NOW + 1, b'{"id":"up-2","status":"running","progress":10}'),
        Event(task.id, "stream", NOW + 2, b"junk", outcome="rejected", detail="not JSON"),
        Event(task.id, "stream", NOW + 3, b"", outcome="deferred", detail="polling instead"),
    ]
    for event in frames:
        await storage.apply(task.id, lambda _: Decision("applied", {"progress": 10}), event)
    stored = await storage.events(task.id)
    assert [(e.source, e.body, e.outcome, e.detail) for e in stored] == [
        ("stream", frames[0].body, "applied", None),
        ("stream", b"junk", "rejected", "not JSON"),
        ("stream", b"", "deferred", "polling instead"),
    ]
