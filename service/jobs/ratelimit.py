"""Per-API-key token buckets for task submission, and a cap on submissions in flight upstream."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

from service.clock import Clock
from service.domain.errors import RateLimited, UpstreamUnavailable


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class SubmitLimiter:
    """`per_minute` submissions per key with bursts up to the same number (0 turns it off)."""

    def __init__(
        self, clock: Clock, per_minute: float, max_in_flight: int, queue_wait: float
    ) -> None:
        self._clock = clock
        self._rate = per_minute / 60.0
        self._burst = per_minute
        self._buckets: dict[str, _Bucket] = {}
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._queue_wait = queue_wait

    def take(self, key_id: str) -> None:
        """Spend one token of `key_id`'s bucket or raise `RateLimited` with Retry-After."""
        if self._rate <= 0:
            return
        now = self._clock.now()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < 1:
            wait = math.ceil((1 - bucket.tokens) / self._rate)
            raise RateLimited(
                f"more than {self._burst:g} submissions a minute; retry in {wait} s",
                retry_after=wait,
            )
        bucket.tokens -= 1
        if len(self._buckets) > 100_000:  # forget full buckets so memory stays bounded
            self._buckets = {k: b for k, b in self._buckets.items() if b.tokens < self._burst}

    @contextlib.asynccontextmanager
    async def upstream_slot(self) -> AsyncIterator[None]:
        """Hold one of the in-flight submission slots (wait a bounded time for one)."""
        try:
            async with asyncio.timeout(self._queue_wait):
                await self._in_flight.acquire()
        except TimeoutError as exc:
            raise UpstreamUnavailable(
                "too many submissions in flight to GrsAI; retry shortly"
            ) from exc
        try:
            yield
        finally:
            self._in_flight.release()
