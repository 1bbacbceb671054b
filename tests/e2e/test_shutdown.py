"""SIGTERM: stop accepting, finish in-flight requests and writes, close the database, exit 0."""

from __future__ import annotations

import asyncio

import httpx

from tests.e2e.conftest import RelayFactory, auth


async def test_sigterm_drains_in_flight_requests_and_exits_cleanly(
    start_relay: RelayFactory, client: httpx.AsyncClient
) -> None:
    """A submit in flight at SIGTERM completes with 202, then the process exits 0, DB closed."""
    relay = start_relay(SHUTDOWN_TIMEOUT="10")
    key = relay.create_key("a")
    in_flight = asyncio.create_task(
        client.post(
            f"{relay.url}/v1/tasks",
            json={"model": "nano-banana", "prompt": "x [sim:slow=1.5]"},
            headers=auth(key),
        )
    )
    await asyncio.sleep(0.5)  # let the request reach the relay and wait on GrsAI
    assert relay.proc is not None
    code = await asyncio.to_thread(relay.terminate, 15.0)
    response = await in_flight
    assert response.status_code == 202, response.text
    assert response.json()["upstream_id"]
    assert code == 0
    stored = relay.query("SELECT id, upstream_id FROM tasks")
    assert stored == [(response.json()["id"], response.json()["upstream_id"])]  # the write finished
    if relay.backend == "sqlite":  # PostgreSQL's server, not the relay, owns its files
        wal = relay.db_path.with_name(relay.db_path.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0  # last connection closed: WAL folded in
    refused = False
    try:
        await client.get(f"{relay.url}/healthz")
    except httpx.ConnectError:
        refused = True
    assert refused


async def test_sigterm_with_nothing_in_flight_exits_zero(start_relay: RelayFactory) -> None:
    """An idle relay exits 0 on SIGTERM (poller stopped, database closed)."""
    relay = start_relay()
    assert await asyncio.to_thread(relay.terminate, 15.0) == 0
    logs = relay.logs().replace(f"ready {relay.url}\n", "")  # the line programs wait for
    assert "Application shutdown complete" in logs or logs == ""
