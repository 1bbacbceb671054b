"""Rate-limit buckets on SQLite: kept in process memory, since one process serves a SQLite file
(`serve --workers` is refused there), and losing them in a restart only refills them."""

from __future__ import annotations

from service.domain.limits import refilled, wait_for_token

MAX_BUCKETS = 100_000  # past this, full buckets are forgotten (they hold nothing to remember)


class SQLiteLimits:
    """Mixed into `SQLiteStorage`."""

    _buckets: dict[str, tuple[float, float]]  # bucket -> (tokens, updated)

    async def take_token(self, bucket: str, now: float, rate: float, burst: float) -> float:
        """Spend one token of `bucket`; return 0.0, or the seconds until one is there."""
        tokens, updated = self._buckets.get(bucket, (burst, now))
        tokens = refilled(tokens, updated, now, rate, burst)
        if tokens < 1:
            self._buckets[bucket] = (tokens, now)
            return wait_for_token(tokens, rate)
        self._buckets[bucket] = (tokens - 1, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._buckets = {
                name: (left, at)
                for name, (left, at) in self._buckets.items()
                if refilled(left, at, now, rate, burst) < burst
            }
        return 0.0
