"""The database misbehaving: locked by another process, or on a full disk.

Callbacks must get a 503 (GrsAI may retry) instead of a 200 for data that was not stored,
/readyz must say so, and the service must recover by itself once the fault clears.

Both faults are made on the SQLite file itself (another process holding its write lock, the
filesystem under it filling up), so these tests are `sqlite_only`: with PostgreSQL the server
owns its files and locks, and the PostgreSQL run deselects them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RelayFactory, auth
from tests.e2e.harness import RelayProcess, SimulatorServer


def _run(tool: str, *args: str) -> bool:
    path = shutil.which(tool)
    if path is None:
        return False
    return subprocess.run([path, *args], capture_output=True, check=False).returncode == 0


@pytest.fixture(name="small_disk")
def _small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs filesystem (needs root: CI runs as root and fails without it; skipped
    elsewhere)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if not _run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)):
        reason = "mounting a tmpfs needs root (CI runs these as root)"
        if os.environ.get("CI") == "true":  # CI must run it, never skip it
            pytest.fail(f"cannot make the small disk: {reason}")
        pytest.skip(reason)
    yield mount_point
    _run("umount", "-l", str(mount_point))


async def _parked_task(
    client: httpx.AsyncClient, relay: RelayProcess, simulator: SimulatorServer
) -> tuple[str, dict[str, Any], str]:
    """A task GrsAI keeps quiet about, so only this test's callbacks change it."""
    key = relay.create_key("a")
    response = await client.post(
        f"{relay.url}/v1/tasks",
        json={"model": "nano-banana", "prompt": "x [sim:drop] [sim:delay=60]"},
        headers=auth(key),
    )
    assert response.status_code == 202, response.text
    task = response.json()
    report = (await client.get(f"{simulator.url}/_sim/tasks/{task['upstream_id']}")).json()
    return key, task, str(report["webhook"])


def _progress(task: dict[str, Any], value: int, padding: int = 0) -> dict[str, Any]:
    return {"id": task["upstream_id"], "status": "running", "progress": value, "pad": "x" * padding}


async def _stored_progress(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, task_id: str
) -> int:
    response = await client.get(f"{relay.url}/v1/tasks/{task_id}", headers=auth(key))
    assert response.status_code == 200
    return int(response.json()["progress"])


@pytest.mark.sqlite_only  # holds the SQLite file's write lock from another process
async def test_locked_database_gives_503_then_recovers(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """While another process holds the write lock, callbacks get 503; afterwards 200 again."""
    relay = start_relay(SQLITE_BUSY_TIMEOUT_MS="200")
    key, task, webhook = await _parked_task(client, relay, simulator)
    blocker = sqlite3.connect(relay.db_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        refused = await client.post(webhook, json=_progress(task, 10))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "storage_unavailable"
        assert refused.headers["retry-after"]
        ready = await client.get(f"{relay.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["status"] == "failing"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    accepted = await client.post(webhook, json=_progress(task, 10))
    assert accepted.status_code == 200
    assert await _stored_progress(client, relay, key, task["id"]) == 10
    assert (await client.get(f"{relay.url}/readyz")).status_code == 200


@pytest.mark.sqlite_only  # fills the filesystem the SQLite file lives on
async def test_full_disk_gives_503_then_recovers(
    start_relay: RelayFactory,
    simulator: SimulatorServer,
    client: httpx.AsyncClient,
    small_disk: Path,
) -> None:
    """When the filesystem is full, callbacks get 503 and nothing 200-acknowledged is lost."""
    relay = start_relay(db_name=str(small_disk / "relay.db"))
    key, task, webhook = await _parked_task(client, relay, simulator)
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(b"\0" * 65536)
    acknowledged, refused = 0, 0
    for value in range(1, 40):
        response = await client.post(webhook, json=_progress(task, value, padding=200_000))
        assert response.status_code in (200, 503), response.text
        if response.status_code == 200:
            acknowledged = value
        else:
            refused += 1
            assert response.json()["error"]["code"] == "storage_unavailable"
    assert refused > 0
    assert await _stored_progress(client, relay, key, task["id"]) == acknowledged
    filler.unlink()
    response = await client.post(webhook, json=_progress(task, 50))
    assert response.status_code == 200
    assert await _stored_progress(client, relay, key, task["id"]) == 50
    assert (await client.get(f"{relay.url}/readyz")).status_code == 200
