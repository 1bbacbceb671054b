"""Slow clients (slowloris) against the real relay: they must not tie the service up.

Raw connections to 127.0.0.1 trickle request heads or bodies one byte at a time while ordinary
requests are made; with `HEADER_TIMEOUT` / `BODY_TIMEOUT` set low the server cuts them off.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest

from tests.e2e.conftest import RelayFactory, auth
from tests.e2e.harness import RelayProcess, SimulatorServer
from tests.hostile_cases import read_response

STILL = "[sim:delay=600][sim:drop]"
DRIP = 0.1  # seconds between the bytes a slow client sends
Ending = Literal["open", "closed", "answered"]


@dataclass
class Slow:
    """How one slow connection ended, and the answer if the server sent one."""

    ending: Ending
    answer: bytes = b""


@dataclass
class Stage:
    """A relay with a caller's key and one still task whose callback token we hold."""

    relay: RelayProcess
    key: str
    task_id: str
    upstream_id: str
    token: str


async def _stage(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient, **env: str
) -> Stage:
    relay = start_relay(CALLBACK_SILENCE="3600", **env)
    key = relay.create_key("slow")
    response = await client.post(
        f"{relay.url}/v1/tasks",
        json={"model": "nano-banana", "prompt": f"slow target {STILL}"},
        headers=auth(key),
    )
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    truth = await client.get(f"{simulator.url}/_sim/tasks/{task['upstream_id']}")
    token = truth.json()["webhook"].rsplit("/", 1)[1]
    return Stage(relay, key, task["id"], task["upstream_id"], token)


async def trickle(
    port: int,
    head: bytes,
    stop: asyncio.Event,
    started: asyncio.Semaphore | None = None,
    *,
    give_up_after: float = 60.0,
) -> Slow:
    """Send `head`, then one byte every DRIP s until `stop`, the server answers or closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    try:
        writer.write(head)
        await writer.drain()
        while not stop.is_set() and loop.time() < deadline:
            writer.write(b"x")
            await writer.drain()
            if started is not None:
                started.release()
                started = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRIP):
                    first = await reader.read(1)
                    if not first:
                        return Slow("closed")
                    return Slow("answered", first + await _rest_of_answer(reader))
        return Slow("open")
    except ConnectionError:
        return Slow("closed")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _rest_of_answer(reader: asyncio.StreamReader) -> bytes:
    """The rest of a response whose first byte was read (head, then Content-Length bytes)."""
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return head + await reader.readexactly(length)


def slow_head(port: int) -> bytes:
    """A request head that never ends: a header value that keeps growing."""
    return b"GET /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: " % port


def slow_body(port: int, path: str, key: str) -> bytes:
    """A complete head announcing a body of which only a byte per DRIP follows."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    ).encode()


async def test_slow_clients_do_not_starve_normal_requests(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """With 50 heads and 50 bodies trickling in, ordinary requests keep succeeding."""
    stage = await _stage(start_relay, simulator, client, HEADER_TIMEOUT="120", BODY_TIMEOUT="120")
    port, url = stage.relay.port, stage.relay.url
    stop = asyncio.Event()
    started = asyncio.Semaphore(0)
    heads = [trickle(port, slow_head(port), stop, started) for _ in range(50)]
    bodies = [
        trickle(port, slow_body(port, path, stage.key), stop, started)
        for n in range(50)
        for path in [f"/webhooks/grsai/{stage.token}" if n % 2 else "/v1/tasks"]
    ]
    slow = asyncio.gather(*heads, *bodies)
    for _ in range(100):
        async with asyncio.timeout(30):
            await started.acquire()

    for step in range(1, 6):
        assert (await client.get(f"{url}/healthz")).status_code == 200
        assert (await client.get(f"{url}/readyz")).status_code == 200
        listed = await client.get(f"{url}/v1/tasks", headers=auth(stage.key))
        assert listed.status_code == 200, listed.text
        callback = await client.post(
            f"{url}/webhooks/grsai/{stage.token}",
            json={"id": stage.upstream_id, "status": "running", "progress": 10 * step},
        )
        assert callback.status_code == 200, callback.text
        submitted = await client.post(
            f"{url}/v1/tasks",
            json={"model": "nano-banana", "prompt": f"beside the slow ones {STILL}"},
            headers=auth(stage.key),
        )
        assert submitted.status_code == 202, submitted.text
    task = await client.get(f"{url}/v1/tasks/{stage.task_id}", headers=auth(stage.key))
    assert (task.json()["status"], task.json()["progress"]) == ("running", 50)

    assert "Traceback" not in stage.relay.logs()
    stop.set()
    endings = [s.ending for s in await slow]
    assert endings == ["open"] * 100  # every slow client was still connected throughout


async def test_hanging_up_mid_body_leaves_no_error(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """Clients that hang up halfway through their bodies leave no traceback in the relay's log."""
    stage = await _stage(start_relay, simulator, client)
    port = stage.relay.port
    for path in (f"/webhooks/grsai/{stage.token}", "/v1/tasks"):
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(slow_body(port, path, stage.key) + b'{"id": "')
            await writer.drain()
            writer.close()
            await writer.wait_closed()
    assert (await client.get(f"{stage.relay.url}/healthz")).status_code == 200
    # The relay notices the hang-ups on its own schedule: give it a bounded moment to log.
    for _ in range(50):
        if "Traceback" in stage.relay.logs():
            break
        await asyncio.sleep(0.1)
    assert "Traceback" not in stage.relay.logs()


async def test_header_deadline_closes_a_slow_head(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """With HEADER_TIMEOUT=1 a connection that never finishes its head is closed by the server."""
    stage = await _stage(start_relay, simulator, client, HEADER_TIMEOUT="1")
    port = stage.relay.port
    ended = await trickle(port, slow_head(port), asyncio.Event(), give_up_after=15)
    assert ended.ending in ("closed", "answered"), "the server never closed the slow head"
    if ended.ending == "answered":
        assert ended.answer.startswith((b"HTTP/1.1 408", b"HTTP/1.1 400")), ended.answer[:200]
    assert (await client.get(f"{stage.relay.url}/healthz")).status_code == 200


@pytest.mark.parametrize("endpoint", ["callback", "submit"])
async def test_body_deadline_cuts_a_slow_body(
    start_relay: RelayFactory,
    simulator: SimulatorServer,
    client: httpx.AsyncClient,
    endpoint: str,
) -> None:
    """With BODY_TIMEOUT=1 a body that trickles forever gets a 408 JSON error or a close."""
    stage = await _stage(start_relay, simulator, client, BODY_TIMEOUT="1")
    port = stage.relay.port
    path = f"/webhooks/grsai/{stage.token}" if endpoint == "callback" else "/v1/tasks"
    before = await client.get(
        f"{stage.relay.url}/v1/tasks/{stage.task_id}", headers=auth(stage.key)
    )
    ended = await trickle(port, slow_body(port, path, stage.key), asyncio.Event(), give_up_after=15)
    assert ended.ending in ("closed", "answered"), "the server never cut the slow body"
    if ended.ending == "answered":
        reader = asyncio.StreamReader()
        reader.feed_data(ended.answer)
        reader.feed_eof()
        response = await read_response(reader)
        assert response.status == 408, ended.answer[:300]
        assert response.json()["error"]["code"] == "request_timeout"
    after = await client.get(f"{stage.relay.url}/v1/tasks/{stage.task_id}", headers=auth(stage.key))
    assert after.json() == before.json()
    listed = await client.get(f"{stage.relay.url}/v1/tasks", headers=auth(stage.key))
    assert [t["id"] for t in listed.json()["data"]] == [stage.task_id]
