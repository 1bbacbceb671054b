"""The copy worker: downloads every result file of a succeeded task before its URL expires.

Its queue is the `assets` table (written in the same transaction as the success), so copies
survive restarts; claiming a job leases it, so a crash mid-download just retries it later.
Downloads run concurrently up to a limit, off the callback path.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

from service.clock import Clock
from service.domain.errors import RelayError
from service.domain.records import Asset
from service.files.download import Downloader, FetchFailed
from service.jobs.worker import QueueWorker
from service.metrics import Metrics
from service.storage import Storage

log = logging.getLogger("grsai_relay.copier")


class Copier(QueueWorker):
    """Copies queued result files on a tick (or at once when kicked)."""

    def __init__(
        self,
        storage: Storage,
        downloader: Downloader,
        clock: Clock,
        *,
        concurrency: int,
        tick: float,
        retry_delays: Sequence[float],
        lease: float,
        rng: random.Random | None = None,
        on_settled: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__("copier", tick, log)
        self._storage = storage
        self._downloader = downloader
        self._clock = clock
        self._concurrency = concurrency
        self._retry_delays = tuple(retry_delays)
        self._lease = lease
        self._rng = rng or random.Random()
        self._on_settled = on_settled
        self._metrics = metrics

    async def run_once(self) -> int:
        """Start copies for due jobs while below the concurrency limit; return how many."""
        free = self._concurrency - len(self.running)
        if free <= 0:
            return 0
        now = self._clock.now()
        jobs = await self._storage.claim_assets(now, free, now + self._lease)
        for job in jobs:
            self.launch(self.copy(job), f"copy-{job.task_id}-{job.n}")
        return len(jobs)

    async def copy(self, job: Asset) -> None:
        """Download one file and record the outcome (stored, retry later, or failed)."""
        try:
            fetched = await self._downloader.fetch(job.upstream_url)
        except FetchFailed as exc:
            self._failed(job, exc)
        except Exception as exc:  # a bug must not leave the job leased forever without a word
            log.exception("copy of %s/%d crashed", job.task_id, job.n)
            self._failed(job, FetchFailed(f"internal error: {exc!r}", retryable=True))
        else:
            job.status, job.error, job.next_attempt_at = "stored", None, None
            job.sha256, job.bytes = fetched.sha256, fetched.size
            job.content_type = fetched.kind.content_type
            job.width, job.height = fetched.kind.width, fetched.kind.height
            job.stored_at = self._clock.now()
            job.attempts += 1
        try:
            await self._storage.save_asset(job, self._clock.now())
        except RelayError as exc:  # the lease brings the job back
            log.warning("could not record copy of %s/%d: %s", job.task_id, job.n, exc.message)
            return
        if self._metrics is not None:
            outcome = "stored" if job.status == "stored" else f"{job.status}_after_error"
            self._metrics.asset_outcomes.labels(outcome).inc()
            if job.status == "stored" and job.bytes:
                self._metrics.asset_bytes.inc(job.bytes)
        if job.status != "pending":
            self._on_settled()

    def _failed(self, job: Asset, exc: FetchFailed) -> None:
        job.error = exc.reason
        if exc.store_down:  # the store's fault, not the file's: queued, no attempt spent
            delay = (self._retry_delays or (5.0,))[0] * self._rng.uniform(0.8, 1.2)
            job.next_attempt_at = self._clock.now() + max(delay, 0.05)
            log.info("copy of %s/%d waits for the file store: %s", job.task_id, job.n, exc)
            return
        job.attempts += 1
        if exc.retryable and job.attempts <= len(self._retry_delays):
            delay = self._retry_delays[job.attempts - 1] * self._rng.uniform(0.8, 1.2)
            job.next_attempt_at = self._clock.now() + delay
            log.info("copy of %s/%d failed (%s); retry in %.1f s", job.task_id, job.n, exc, delay)
        else:
            job.status, job.next_attempt_at = "failed", None
            log.warning("copy of %s/%d failed for good: %s", job.task_id, job.n, exc.reason)
