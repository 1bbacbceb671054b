"""The shape shared by the background workers that run jobs from a database queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from service.domain.errors import RelayError


class QueueWorker:
    """Runs `run_once` on a tick (or at once when kicked) and tracks the jobs it started.

    Subclasses claim due jobs in `run_once` and hand each to `launch`; the jobs run
    concurrently, and a finished job wakes the loop so its slot is refilled at once.
    """

    def __init__(self, name: str, tick: float, log: logging.Logger) -> None:
        self._name = name
        self._tick = tick
        self._log = log
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.running: dict[asyncio.Task[None], str] = {}  # job -> its tag (e.g. a host)

    async def run_once(self) -> int:
        """Claim and launch due jobs; return how many."""
        raise NotImplementedError

    def start(self) -> None:
        """Run the loop in the background."""
        self._task = asyncio.create_task(self._run(), name=self._name)

    def kick(self) -> None:
        """Look for due jobs now instead of at the next tick."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        """True while the loop runs."""
        return self._task is not None and not self._task.done()

    def launch(self, job: Coroutine[Any, Any, None], name: str, tag: str = "") -> None:
        """Start one job and track it."""
        task = asyncio.create_task(job, name=name)
        self.running[task] = tag
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.running.pop(task, None)
        self._wake.set()  # a slot is free: look for more work

    async def wait_idle(self) -> None:
        """Wait until no job is running."""
        while self.running:
            await asyncio.gather(*self.running, return_exceptions=True)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop; jobs still running after `grace` are cancelled (their lease retries them).

        Their HTTP sends are detached from them (see `service.upstream.httppool`) and end by httpx's
        timeouts or when the client closes, so cancelling cannot jam a connection pool.
        """
        self._stop.set()
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            for job in list(self.running):
                job.cancel()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except RelayError as exc:
                self._log.warning("%s round failed: %s", self._name, exc.message)
            except Exception:  # keep working whatever one round hit
                self._log.exception("%s round crashed", self._name)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._tick)
        await self.wait_idle()
