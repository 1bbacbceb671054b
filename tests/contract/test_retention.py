"""The contract for forgetting: purging old tasks and pruning old result copies."""

from __future__ import annotations

import dataclasses

from service.domain.records import Asset, Attempt
from service.domain.retention import PRUNED
from service.storage import Event, Storage
from tests.contract.conftest import NOW, finishing, make_task

OLD, CUTOFF, RECENT = NOW, NOW + 1000, NOW + 2000
HOOK = "https://client.test/done"


async def final(
    storage: Storage, name: str, status: str, at: float, *urls: str, hook: str | None = None
) -> str:
    """A task made final at `at` (copies of `urls` queued) with one stored event."""
    task_id = f"task_{name}"
    await storage.insert_task(make_task(name, callback_url=hook))
    await storage.apply(task_id, finishing(status, at, *urls), Event(task_id, "poll", at, b"{}"))
    return task_id


async def store_copies(storage: Storage, task_id: str, *shas: str) -> None:
    """Store the task's copies (one per queued job, in order) under `shas`."""
    jobs = [j for j in await storage.assets_of(task_id) if j.status == "pending"]
    for job, sha in zip(jobs, shas, strict=True):
        done = dataclasses.replace(
            job, status="stored", attempts=1, next_attempt_at=None, sha256=sha, stored_at=OLD
        )
        await storage.save_asset(done, OLD)


async def scene(storage: Storage) -> dict[str, str]:
    """Old idle tasks, old busy ones (a copy or a callback pending) and newer ones."""
    ids = {
        "old_failed": await final(storage, "old_failed", "failed", OLD),
        "old_copied": await final(storage, "old_copied", "succeeded", OLD, "https://f.test/a"),
        "old_copying": await final(storage, "old_copying", "succeeded", OLD, "https://f.test/b"),
        "old_calling": await final(storage, "old_calling", "failed", OLD, hook=HOOK),
        "recent": await final(storage, "recent", "succeeded", RECENT, "https://f.test/c"),
    }
    await storage.insert_task(make_task("running", status="running"))
    await store_copies(storage, ids["old_copied"], "a" * 64)
    await store_copies(storage, ids["recent"], "c" * 64)
    return ids


async def test_purge_takes_old_idle_final_tasks_with_every_row_about_them(
    storage: Storage,
) -> None:
    """Old final tasks with nothing left to do go (events, copies, deliveries too); busy ones
    are held; `purge_counts` says beforehand exactly what `purge_tasks` deletes."""
    ids = await scene(storage)
    counts = await storage.purge_counts(CUTOFF)
    assert counts == {
        "tasks": 2, "events": 2, "assets": 1, "deliveries": 0, "delivery_attempts": 0, "held": 2,
    }  # fmt: skip
    assert not await storage.hash_in_use_after_purge("a" * 64, CUTOFF)
    assert await storage.hash_in_use_after_purge("c" * 64, CUTOFF)
    deleted = await storage.purge_tasks(CUTOFF, batch=1)
    assert deleted == {k: v for k, v in counts.items() if k != "held"}
    for name in ("old_failed", "old_copied"):
        assert await storage.task(ids[name]) is None
        assert await storage.events(ids[name]) == []
    assert await storage.assets_of(ids["old_copied"]) == []
    for name in ("old_copying", "old_calling", "recent"):
        assert await storage.task(ids[name]) is not None
    assert await storage.task("task_running") is not None
    assert (await storage.purge_counts(CUTOFF))["tasks"] == 0


async def test_purge_takes_delivered_callbacks_with_their_task(storage: Storage) -> None:
    """Once its callback is delivered, an old task goes with its delivery and attempts."""
    task_id = await final(storage, "told", "failed", OLD, hook=HOOK)
    ((delivery, _),) = await storage.deliveries_of(task_id)
    sent = dataclasses.replace(delivery, status="delivered", attempts=1, next_attempt_at=None)
    await storage.record_attempt(sent, Attempt(delivery.id, OLD, 200, 1.0, None), gone=False)
    deleted = await storage.purge_tasks(CUTOFF, batch=10)
    assert (deleted["tasks"], deleted["deliveries"], deleted["delivery_attempts"]) == (1, 1, 1)
    assert await storage.deliveries_of(task_id) == []


async def test_prune_retires_old_copies_and_names_the_orphaned_files(storage: Storage) -> None:
    """Stored copies of tasks completed before the cutoff become `pruned` (in `results` too);
    the files no stored copy refers to any more are named."""
    ids = await scene(storage)
    shared = await final(storage, "shared", "succeeded", RECENT, "https://f.test/d")
    await store_copies(storage, shared, "a" * 64)  # a newer task holds the same file
    assert await storage.prune_count(CUTOFF) == 1
    assert await storage.hash_in_use_after_prune("a" * 64, CUTOFF)  # `shared` keeps it
    assert await storage.hash_in_use("a" * 64)
    assert await storage.prune_assets(CUTOFF, 10, RECENT) == (1, [])
    job = await storage.asset(ids["old_copied"], 0)
    assert job is not None
    assert (job.status, job.error) == ("pruned", PRUNED)
    task = await storage.task(ids["old_copied"])
    assert task is not None
    assert (task.results[0]["url"], task.results[0]["asset"]["status"]) == (None, "pruned")
    assert await storage.prune_count(CUTOFF) == 0
    later = RECENT + 1000
    assert not await storage.hash_in_use_after_prune("c" * 64, later)
    assert await storage.prune_assets(later, 10, later) == (2, ["a" * 64, "c" * 64])
    assert not await storage.hash_in_use("a" * 64)


async def test_prune_works_in_batches(storage: Storage) -> None:
    """`limit` bounds one call; the next call takes the rest."""
    for n in range(3):
        task_id = await final(storage, f"t{n}", "succeeded", OLD, "https://f.test/x")
        await store_copies(storage, task_id, f"{n}" * 64)
    first = await storage.prune_assets(CUTOFF, 2, RECENT)
    second = await storage.prune_assets(CUTOFF, 2, RECENT)
    assert (first[0], second[0]) == (2, 1)
    assert sorted(first[1] + second[1]) == ["0" * 64, "1" * 64, "2" * 64]
    assert [a.status for a in await storage.assets_of("task_t0")] == ["pruned"]
    unused: list[Asset] = await storage.claim_assets(RECENT, 10, RECENT + 60)
    assert unused == []  # pruned copies are not copy jobs
