"""`serve --workers 2` on PostgreSQL: two processes serve one port, a dead one is replaced,
SIGTERM stops them all.

Which process answered is read from the kernel (the owner of the server side of each
connection, in /proc), never from anything the relay exposes.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import pgserver
from tests.e2e.conftest import RelayFactory, auth, wait_for_task
from tests.e2e.harness import RelayProcess

HANG_GUARD = 120.0  # seconds; a loaded 2-core machine is many times slower than an idle one
# PostgreSQL whatever RELAY_TEST_BACKEND says (SQLite refuses several workers): one run covers it
pytestmark = pytest.mark.no_database


@pytest.fixture(name="database_url")
def _database_url() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own."""
    with pgserver.fresh_database() as url:
        yield url


def workers_of(parent: int) -> set[int]:
    """The serving children of `parent` (not multiprocessing's resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.add(int(entry.name))
    return found


def _socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server side of the loopback connection from `client_port`."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":"), fields[2].split(":")
        if int(local[1], 16) == server_port and int(remote[1], 16) == client_port:
            return int(fields[9])
    return None


def _owner(pids: set[int], inode: int) -> int | None:
    """Which of `pids` holds the socket `inode`."""
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def answering(relay: RelayProcess, pids: set[int]) -> set[int]:
    """Make requests on new connections until each of `pids` has answered one; return the
    pids seen (fails after the hang guard)."""
    seen: set[int] = set()
    deadline = time.monotonic() + HANG_GUARD
    while seen != pids:
        assert time.monotonic() < deadline, f"only {seen} of {pids} answered"
        conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            assert conn.sock is not None
            inode = _socket_inode(relay.port, conn.sock.getsockname()[1])
            owner = _owner(pids, inode) if inode is not None else None
        finally:
            conn.close()
        if owner is not None:
            seen.add(owner)
    return seen


def wait_for_workers(parent: int, count: int, without: frozenset[int] = frozenset()) -> set[int]:
    """Wait until `parent` has `count` serving children, none of them in `without`."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        pids = workers_of(parent)
        if len(pids) == count and not pids & without:
            return pids
        assert time.monotonic() < deadline, f"children of {parent}: {pids}"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """No process `pid` any more (not even a zombie)."""
    return not Path(f"/proc/{pid}").exists()


async def test_two_workers_share_the_port_a_dead_one_is_replaced_and_sigterm_stops_all(
    start_relay: RelayFactory, database_url: str, client: httpx.AsyncClient
) -> None:
    """Both processes answer; work flows through them; a SIGKILLed one is replaced and
    answers too; SIGTERM ends every process with exit code 0."""
    relay = start_relay(DATABASE_URL=database_url, WORKERS="2", LOG_LEVEL="info")
    assert relay.proc is not None
    parent = relay.proc.pid
    first = await asyncio.to_thread(wait_for_workers, parent, 2)
    assert await asyncio.to_thread(answering, relay, first) == first

    key = relay.create_key("workers")
    response = await client.post(
        f"{relay.url}/v1/tasks", json={"model": "nano-banana", "prompt": "x"}, headers=auth(key)
    )
    assert response.status_code == 202, response.text
    task = await wait_for_task(client, relay, key, response.json()["id"], within=HANG_GUARD)
    assert task["status"] == "succeeded"

    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    now = await asyncio.to_thread(wait_for_workers, parent, 2, frozenset({victim}))
    [replacement] = now - first
    assert await asyncio.to_thread(answering, relay, now) == now
    assert f"(pid {victim}) was killed by SIGKILL; starting a new one" in relay.logs()

    assert await asyncio.to_thread(relay.terminate, HANG_GUARD) == 0
    assert all(gone(pid) for pid in now | {victim, replacement})
    assert workers_of(parent) == set()
    assert "2 worker(s) stopped" in relay.logs()
    # the supervisor says `ready <url>` once, when the first worker serves (not per worker)
    assert relay.logs().count(f"ready {relay.url}\n") == 1
