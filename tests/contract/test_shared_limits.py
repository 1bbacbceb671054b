"""Rate-limit buckets shared by every process on one PostgreSQL database (SQLite is served by
one process, which keeps its buckets in memory)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.storage import open_storage
from tests.contract.conftest import NOW, postgresql_database


@pytest.fixture(name="url")
def _url(tmp_path: Path) -> Iterator[str]:
    with postgresql_database(tmp_path) as url:
        yield url


async def test_replicas_spend_from_one_bucket(url: str) -> None:
    """Forty spends through three handles of one database admit exactly the burst of ten."""
    handles = [open_storage(url) for _ in range(3)]
    for handle in handles:
        await handle.open()
    try:
        waits = await asyncio.gather(
            *(handles[n % 3].take_token("submit:k", NOW, 1 / 3600, 10) for n in range(40))
        )
        assert sum(1 for wait in waits if wait == 0.0) == 10
    finally:
        for handle in handles:
            await handle.close()
