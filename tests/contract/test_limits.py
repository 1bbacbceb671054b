"""The contract for rate-limit buckets (`Storage.take_token`)."""

from __future__ import annotations

import asyncio

import pytest

from service.storage import Storage
from tests.contract.conftest import NOW


async def test_a_bucket_spends_its_burst_then_says_how_long_to_wait(storage: Storage) -> None:
    """A full bucket of 3 admits 3, then refuses with the time until a token is back."""
    rate = 1 / 20  # one token every 20 s
    waits = [await storage.take_token("submit:k", NOW, rate, 3) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(20.0)
    assert await storage.take_token("submit:k", NOW + 10, rate, 3) == pytest.approx(10.0)
    assert await storage.take_token("submit:k", NOW + 20, rate, 3) == 0.0


async def test_buckets_are_separate_and_never_overfill(storage: Storage) -> None:
    """Another bucket has its own tokens; a long pause refills up to the burst only."""
    rate = 1.0
    for _ in range(2):
        assert await storage.take_token("a", NOW, rate, 2) == 0.0
    assert await storage.take_token("a", NOW, rate, 2) > 0
    assert await storage.take_token("b", NOW, rate, 2) == 0.0
    later = NOW + 3600
    assert [await storage.take_token("a", later, rate, 2) for _ in range(3)][2] > 0


async def test_a_clock_behind_the_bucket_refills_nothing(storage: Storage) -> None:
    """A replica whose clock lags the last spend gets no tokens from the difference."""
    assert await storage.take_token("c", NOW + 100, 1.0, 1) == 0.0
    assert await storage.take_token("c", NOW, 1.0, 1) > 0


async def test_concurrent_spends_never_exceed_the_burst(storage: Storage) -> None:
    """Forty spends racing for a bucket of ten admit exactly ten."""
    waits = await asyncio.gather(
        *(storage.take_token("race", NOW, 1 / 3600, 10) for _ in range(40))
    )
    assert sum(1 for wait in waits if wait == 0.0) == 10
