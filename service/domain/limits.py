"""Token buckets: `rate` tokens a second, holding at most `burst`; each admitted request spends
one. Every backend stores the buckets its own way and applies this arithmetic (PostgreSQL in
one SQL statement, so replicas share each key's bucket)."""

from __future__ import annotations


def refilled(tokens: float, updated: float, now: float, rate: float, burst: float) -> float:
    """The tokens a bucket holds at `now` (never above `burst`; a clock step back adds none)."""
    return min(burst, tokens + max(0.0, now - updated) * rate)


def wait_for_token(tokens: float, rate: float) -> float:
    """Seconds until a bucket holding `tokens` (< 1) has a whole one."""
    return (1.0 - tokens) / rate
