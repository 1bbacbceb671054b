"""Work notices between processes sharing a PostgreSQL database (`StorageOptions.on_work`):
work queued through one handle wakes every other handle's workers, also after the server cut
the listening connection. (SQLite is one process: it has nothing to tell.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from service.storage import Storage, StorageOptions, open_storage
from tests import pgserver
from tests.contract.conftest import KEY, NOW, finishing, key_hash, make_task, postgresql_database

WAIT = 30.0  # hang guard: notices arrive in milliseconds


class Heard:
    """The queues named by the notices one handle heard."""

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, queue: str) -> None:
        self.queues.append(queue)
        self.changed.set()

    async def until(self, queue: str) -> None:
        """Wait until `queue` was named."""
        async with asyncio.timeout(WAIT):
            while queue not in self.queues:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture(name="url")
def _url(tmp_path: Path) -> Iterator[str]:
    with postgresql_database(tmp_path) as url:
        yield url


async def _opened(url: str, heard: Heard | None = None) -> Storage:
    storage = open_storage(url, StorageOptions(on_work=heard))
    await storage.open()
    return storage


async def test_a_final_state_stored_by_one_handle_wakes_the_others(url: str) -> None:
    """Copies and a final event queued through one handle reach another's listener."""
    heard = Heard()
    writer, listener = await _opened(url), await _opened(url, heard)
    try:
        await writer.create_api_key(KEY, key_hash(KEY))
        await writer.insert_task(make_task(1, callback_url="https://client.test/hook"))
        await writer.apply("task_1", finishing("succeeded", NOW, "https://f.test/a"), None)
        await heard.until("copier")
        [asset] = await writer.claim_assets(NOW + 1, 5, NOW + 60)
        asset.status, asset.sha256 = "stored", "0" * 64
        await writer.save_asset(asset, NOW + 2)  # the last copy: the client may be told
        await heard.until("deliverer")
    finally:
        await writer.close()
        await listener.close()


async def test_the_listener_comes_back_after_the_server_cut_it(url: str) -> None:
    """The server ending the listening connection: a new one listens, notices arrive again."""
    heard = Heard()
    writer, listener = await _opened(url), await _opened(url, heard)
    name = url.rsplit("/", 1)[1]
    try:
        await writer.create_api_key(KEY, key_hash(KEY))
        await writer.insert_task(make_task("first"))
        await writer.apply("task_first", finishing("succeeded", NOW, "https://f.test/a"), None)
        await heard.until("copier")  # the listener is listening
        heard.queues.clear()
        conn = await asyncpg.connect(pgserver.admin_url())
        try:
            cut = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND query ILIKE 'LISTEN%'",
                name,
            )
            assert cut >= 1  # every handle listens (for key revocations too)
        finally:
            await conn.close()
        for n in range(200):  # until the new listener hears one (each try queues a copy)
            await writer.insert_task(make_task(n))
            await writer.apply(f"task_{n}", finishing("succeeded", NOW, "https://f.test/a"), None)
            try:
                async with asyncio.timeout(0.25):
                    await heard.until("copier")
                break
            except TimeoutError:
                continue
        assert "copier" in heard.queues
    finally:
        await writer.close()
        await listener.close()


async def test_a_key_revoked_through_one_handle_stops_working_on_the_others(url: str) -> None:
    """Another process may remember a key it found, but forgets it when told of a revocation."""
    holder, revoker = await _opened(url), await _opened(url)
    try:
        await revoker.create_api_key(KEY, key_hash(KEY))
        assert await holder.api_key_by_hash(key_hash(KEY)) == KEY  # now remembered
        assert await revoker.revoke_api_key(KEY.id, NOW + 5)
        for _ in range(int(WAIT / 0.01)):  # until the notice arrived (milliseconds)
            if await holder.api_key_by_hash(key_hash(KEY)) is None:
                break
            await asyncio.sleep(0.01)
        assert await holder.api_key_by_hash(key_hash(KEY)) is None
    finally:
        await holder.close()
        await revoker.close()
