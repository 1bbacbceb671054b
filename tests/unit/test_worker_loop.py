"""The queue-worker loop shared by the poller, the copier and the deliverer."""

from __future__ import annotations

import asyncio
import logging

from service.jobs.copier import Copier
from service.jobs.delivery import Deliverer
from service.jobs.poller import Poller
from service.jobs.worker import QueueWorker

HOUR = 3600.0  # a tick no test waits for: a round that waits for it would hang the test


class Counted(QueueWorker):
    """Claims the next count from `rounds` each round; a round of `full` jobs goes again."""

    def __init__(self, rounds: list[int], full: int) -> None:
        super().__init__("counted", HOUR, logging.getLogger("test.worker"))
        self.rounds = rounds
        self.full = full
        self.done = 0
        self.drained = asyncio.Event()

    async def run_once(self) -> int:
        """Hand out the next count; set `drained` when none is left."""
        self.done += 1
        if not self.rounds:
            self.drained.set()
            return 0
        return self.rounds.pop(0)

    def more_waiting(self, claimed: int) -> bool:
        """A full round leaves more work."""
        return claimed >= self.full


def test_every_background_worker_runs_on_the_shared_loop() -> None:
    """The poller, the copier and the deliverer are all queue workers."""
    assert all(issubclass(worker, QueueWorker) for worker in (Poller, Copier, Deliverer))


async def test_a_full_round_is_followed_at_once_by_another() -> None:
    """Rounds that claim a full batch run back to back, without waiting for the tick."""
    worker = Counted([5, 5, 5], full=5)
    worker.start()
    async with asyncio.timeout(30):  # a hang guard: the rounds never wait for the hour
        await worker.drained.wait()
    await worker.stop(grace=1.0)
    assert worker.done == 4  # three full rounds, then the empty one


async def test_a_partial_round_waits_for_the_tick_or_a_kick() -> None:
    """After a round below a full batch the loop sleeps until kicked."""
    worker = Counted([2], full=5)
    worker.start()
    for _ in range(20):  # let the loop run its round and go to sleep
        await asyncio.sleep(0)
    assert worker.done == 1
    worker.kick()
    async with asyncio.timeout(30):
        await worker.drained.wait()
    assert worker.done == 2
    await worker.stop(grace=1.0)
    assert not worker.alive


async def test_stop_during_a_round_ends_the_loop_without_waiting_for_the_tick() -> None:
    """A worker stopped while a round runs ends after that round, not a tick later."""
    entered, release = asyncio.Event(), asyncio.Event()

    class Slow(Counted):
        async def run_once(self) -> int:
            entered.set()
            await release.wait()
            return 0

    worker = Slow([], full=5)
    worker.start()
    await entered.wait()
    stopping = asyncio.create_task(worker.stop(grace=HOUR))
    await asyncio.sleep(0)
    release.set()
    async with asyncio.timeout(30):
        await stopping
    assert not worker.alive
