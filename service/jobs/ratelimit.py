"""Per-API-key token buckets for task submission, and a cap on submissions in flight upstream."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Protocol

from service.clock import Clock
from service.domain.errors import RateLimited, UpstreamUnavailable


class Buckets(Protocol):
    """Where token buckets are kept (the storage)."""

    async def take_token(self, bucket: str, now: float, rate: float, burst: float) -> float:
        """Spend a token, or return the seconds until one is there."""


class SubmitLimiter:
    """`per_minute` submissions per key with bursts up to the same number (0 turns it off).

    The buckets live in the storage (`Storage.take_token`): on PostgreSQL every replica
    spends from the same bucket per key; the in-flight cap is per process.
    """

    def __init__(
        self,
        clock: Clock,
        per_minute: float,
        max_in_flight: int,
        queue_wait: float,
        buckets: Buckets,
    ) -> None:
        self._clock = clock
        self._rate = per_minute / 60.0
        self._burst = per_minute
        self._buckets = buckets
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._queue_wait = queue_wait

    async def take(self, key_id: str) -> None:
        """Spend one token of `key_id`'s bucket or raise `RateLimited` with Retry-After."""
        if self._rate <= 0:
            return
        wait = await self._buckets.take_token(
            f"submit:{key_id}", self._clock.now(), self._rate, self._burst
        )
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise RateLimited(
                f"more than {self._burst:g} submissions a minute; retry in {seconds} s",
                retry_after=seconds,
            )

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
