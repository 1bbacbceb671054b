"""The PostgreSQL server misbehaving: turned read-only (as a standby is), or cutting the relay's
connections (a restart, a failover, an idle-connection reaper).

As with SQLite's faults: a callback gets a 503 (GrsAI may retry) instead of a 200 for data that
was not stored, /readyz says so, and the relay recovers by itself once the fault clears. These
are `postgresql_only`: the SQLite run deselects them.
"""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from tests import pgserver
from tests.e2e.conftest import RelayFactory
from tests.e2e.harness import RelayProcess, SimulatorServer
from tests.e2e.test_storage_faults import _parked_task, _progress, _stored_progress

pytestmark = pytest.mark.postgresql_only
RELAY_CONNECTIONS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = $1 AND application_name = 'grsai-relay'"
)


def _name(relay: RelayProcess) -> str:
    return relay.env["DATABASE_URL"].rsplit("/", 1)[1]


async def _admin(sql: str, *args: object) -> None:
    conn = await asyncpg.connect(pgserver.admin_url())
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_a_read_only_server_gives_503_then_recovers(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """While the database only takes reads, callbacks get 503 and /readyz fails; then 200."""
    relay = start_relay()
    key, task, webhook = await _parked_task(client, relay, simulator)
    name = _name(relay)
    await _admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    await _admin(RELAY_CONNECTIONS, name)  # its connections come back read-only
    try:
        refused = await client.post(webhook, json=_progress(task, 10))
        for _ in range(3):  # a connection the cut left in the pool may fail first
            if refused.status_code == 503:
                break
            refused = await client.post(webhook, json=_progress(task, 10))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "storage_unavailable"
        assert refused.headers["retry-after"]
        ready = await client.get(f"{relay.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["status"] == "failing"
        assert await _stored_progress(client, relay, key, task["id"]) == 0
    finally:
        await _admin(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await _admin(RELAY_CONNECTIONS, name)
    accepted = await _until_stored(client, webhook, _progress(task, 20))
    assert accepted.status_code == 200
    assert await _stored_progress(client, relay, key, task["id"]) == 20


async def _until_stored(
    client: httpx.AsyncClient, url: str, body: dict[str, object]
) -> httpx.Response:
    """POST until the relay stops answering 503 (it is told the fault cleared by failing)."""
    for _ in range(20):
        response = await client.post(url, json=body)
        if response.status_code != 503:
            return response
        await asyncio.sleep(0.1)
    return response


async def test_cut_connections_lose_nothing_acknowledged(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """The server cutting every relay connection mid-stream: each callback answered 200 is
    stored, the others got 503, and the relay carries on with fresh connections."""
    relay = start_relay()
    key, task, webhook = await _parked_task(client, relay, simulator)
    name = _name(relay)
    acknowledged = 0
    for value in range(1, 31):
        if value % 5 == 0:
            await _admin(RELAY_CONNECTIONS, name)
        response = await client.post(webhook, json=_progress(task, value))
        assert response.status_code in (200, 503), response.text
        if response.status_code == 200:
            acknowledged = value
    assert acknowledged >= 25  # a cut costs at most the request that met it
    assert await _stored_progress(client, relay, key, task["id"]) == acknowledged
    assert (await client.get(f"{relay.url}/readyz")).status_code == 200
