"""Rate-limit buckets on PostgreSQL: one row per bucket, refilled and spent in one statement,
so every replica spends from the same bucket (the arithmetic of `domain.limits`)."""

from __future__ import annotations

from service.domain.limits import wait_for_token
from service.storage.postgres.core import PgBase

# $1 bucket, $2 now, $3 rate (tokens a second), $4 burst. A clock behind the stored time (another
# replica's) refills nothing and moves no time back.
_LEFT = "LEAST($4, b.tokens + GREATEST(0, $2 - b.updated_at) * $3)"
_SPEND = (
    "INSERT INTO rate_buckets AS b (bucket, tokens, updated_at) VALUES ($1, $4 - 1, $2)"
    f" ON CONFLICT (bucket) DO UPDATE SET tokens = {_LEFT} - 1,"
    " updated_at = GREATEST(b.updated_at, $2)"
    f" WHERE {_LEFT} >= 1 RETURNING tokens"
)
_PEEK = f"SELECT {_LEFT} FROM rate_buckets AS b WHERE bucket = $1"


class PgLimits(PgBase):
    """Mixed into `PostgresStorage`."""

    async def take_token(self, bucket: str, now: float, rate: float, burst: float) -> float:
        """Spend one token of `bucket`; return 0.0, or the seconds until one is there."""
        if await self._fetch(_SPEND, bucket, now, rate, burst):
            return 0.0
        left = await self._fetchval(_PEEK, bucket, now, rate, burst)
        return wait_for_token(min(float(left if left is not None else 0.0), 0.999), rate)
