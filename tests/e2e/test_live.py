"""Live status over real HTTP: long-polls and event streams woken by the task's change itself.

Tasks are held by the simulator (`[sim:delay=600]`) until the test finishes them
(`/_sim/tasks/{id}/complete`), and `CALLBACK_SILENCE=600` keeps the poller away, so the one
change a waiter sees is the one the test made. Every wait has a generous hang guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RelayFactory, auth, settled
from tests.e2e.harness import RelayProcess, SimulatorServer

HANG = 60.0  # a hang guard, never a measure
HELD = "[sim:delay=600] a lighthouse"  # the simulator holds it until the test finishes it
QUIET = {"CALLBACK_SILENCE": "600"}  # no poll changes a held task behind the test's back


async def _held_task(client: httpx.AsyncClient, relay: RelayProcess, key: str) -> dict[str, Any]:
    body = {"model": "nano-banana", "prompt": HELD}
    created = await client.post(f"{relay.url}/v1/tasks", json=body, headers=auth(key))
    assert created.status_code == 202, created.text
    task: dict[str, Any] = created.json()
    return task


async def _finish(client: httpx.AsyncClient, simulator: SimulatorServer, upstream_id: str) -> None:
    done = await client.post(f"{simulator.url}/_sim/tasks/{upstream_id}/complete")
    assert done.status_code == 200, done.text


async def _lookup(client: httpx.AsyncClient, relay: RelayProcess, key: str, task_id: str) -> Any:
    response = await client.get(f"{relay.url}/v1/tasks/{task_id}", headers=auth(key))
    assert response.status_code == 200, response.text
    return response


class Stream:
    """One open event stream, read event by event."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next_event(self) -> dict[str, Any] | None:
        """The next event (`id`, `event`, `data` parsed), or None when the server ended it."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(HANG):
            async for line in self.lines:
                if line.startswith(":"):
                    self.comments.append(line)
                elif line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                elif fields:
                    return {**fields, "data": json.loads(fields["data"])}
        return None

    async def rest(self) -> list[dict[str, Any]]:
        """Every event until the server ends the stream."""
        events = []
        while (event := await self.next_event()) is not None:
            events.append(event)
        return events


@contextlib.asynccontextmanager
async def stream(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, task_id: str, **headers: str
) -> AsyncIterator[Stream]:
    """`GET /v1/tasks/{id}/events`, open until the block ends."""
    url = f"{relay.url}/v1/tasks/{task_id}/events"
    request = client.build_request("GET", url, headers={**auth(key), **headers})
    response = await client.send(request, stream=True)
    try:
        assert response.status_code == 200, (await response.aread()).decode()
        yield Stream(response)
    finally:
        await response.aclose()


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    """A client that never times out reading (streams are idle for long), pooled widely."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), limits=limits) as client:
        yield client


async def test_many_long_polls_are_woken_by_the_callback(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """Fifty long-polls holding the task's ETag all answer with the new state once GrsAI's
    callback changed it; one holding an old ETag answers at once."""
    relay = start_relay(**QUIET)
    key = relay.create_key("live")
    task = await _held_task(client, relay, key)
    etag = (await _lookup(client, relay, key, task["id"])).headers["etag"]
    url = f"{relay.url}/v1/tasks/{task['id']}?wait=60"
    held = {**auth(key), "If-None-Match": etag}
    polls = [asyncio.create_task(client.get(url, headers=held)) for _ in range(50)]
    await _finish(client, simulator, task["upstream_id"])
    async with asyncio.timeout(HANG):
        answers = await asyncio.gather(*polls)
    assert {a.status_code for a in answers} == {200}
    assert all(a.headers["etag"] != etag and a.json() != task for a in answers)
    stale = await client.get(url, headers={**auth(key), "If-None-Match": etag})
    assert stale.headers["etag"] != etag


async def test_long_poll_times_out_with_the_unchanged_task(
    start_relay: RelayFactory, client: httpx.AsyncClient
) -> None:
    """Nothing changes: the long-poll answers at its timeout with the same task and ETag."""
    relay = start_relay(**QUIET)
    key = relay.create_key("live")
    task = await _held_task(client, relay, key)
    before = await _lookup(client, relay, key, task["id"])
    held = {**auth(key), "If-None-Match": before.headers["etag"]}
    answer = await client.get(f"{relay.url}/v1/tasks/{task['id']}?wait=0.5", headers=held)
    assert answer.status_code == 200
    assert answer.headers["etag"] == before.headers["etag"]
    assert answer.json() == before.json()


async def test_stream_sends_progress_then_final_then_closes_and_resumes(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """A stream sends the task as it is, each change, and the settled task last, then ends;
    resuming from an event id sends only what came after it; from the last one it is 204."""
    relay = start_relay(**QUIET)
    key = relay.create_key("live")
    task = await _held_task(client, relay, key)
    async with stream(client, relay, key, task["id"]) as first:
        opening = await first.next_event()
        assert opening is not None
        assert opening["event"] == "task"
        assert opening["data"]["status"] in ("pending", "running")
    # resumed from the event it saw: nothing is sent again until the task changes
    async with stream(client, relay, key, task["id"], **{"Last-Event-ID": opening["id"]}) as again:
        await _finish(client, simulator, task["upstream_id"])
        events = await again.rest()
    assert events
    assert events[0]["id"] != opening["id"]
    assert len({e["id"] for e in events}) == len(events)
    assert all(e["event"] == "task" for e in events)
    assert settled(events[-1]["data"])
    assert not any(settled(e["data"]) for e in events[:-1])
    final = await _lookup(client, relay, key, task["id"])
    assert final.json() == events[-1]["data"]
    assert final.headers["etag"] == f'"{events[-1]["id"]}"'
    url = f"{relay.url}/v1/tasks/{task['id']}/events"
    done = await client.get(url, headers={**auth(key), "Last-Event-ID": events[-1]["id"]})
    assert done.status_code == 204
    async with stream(client, relay, key, task["id"], **{"Last-Event-ID": "stale"}) as late:
        assert [e["data"] for e in await late.rest()] == [final.json()]


async def test_heartbeats_and_the_per_key_limit_and_a_client_leaving(
    start_relay: RelayFactory, client: httpx.AsyncClient
) -> None:
    """An idle stream gets `: ping` comments; a key's streams beyond STREAMS_PER_KEY get 429;
    a client that goes away frees its slot."""
    relay = start_relay(STREAMS_PER_KEY="2", STREAM_HEARTBEAT="0.2", **QUIET)
    key = relay.create_key("live")
    task = await _held_task(client, relay, key)
    url = f"{relay.url}/v1/tasks/{task['id']}/events"
    async with stream(client, relay, key, task["id"]) as one:
        assert await one.next_event() is not None
        async with stream(client, relay, key, task["id"]) as two:
            assert await two.next_event() is not None
            async with asyncio.timeout(HANG):
                async for line in two.lines:
                    if line == ": ping":
                        break
            refused = await client.get(url, headers=auth(key))
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_streams"
        # `two` went away: its slot comes free once the server notices
        async with asyncio.timeout(HANG):
            while True:
                request = client.build_request("GET", url, headers=auth(key))
                response = await client.send(request, stream=True)
                await response.aclose()
                if response.status_code == 200:
                    break
                assert response.status_code == 429
                await asyncio.sleep(0.05)


async def _until_waiting(client: httpx.AsyncClient, relay: RelayProcess, count: int) -> None:
    """Wait until the relay's gauge of open streams and long-polls reaches `count`."""
    async with asyncio.timeout(HANG):
        while True:
            text = (await client.get(f"{relay.url}/metrics")).text
            line = next(x for x in text.splitlines() if x.startswith("grsai_relay_live_waiters "))
            if float(line.split()[1]) >= count:
                return
            await asyncio.sleep(0.05)


async def test_sigterm_ends_open_streams_and_long_polls_at_once(
    start_relay: RelayFactory, client: httpx.AsyncClient
) -> None:
    """With streams and long-polls open, SIGTERM ends them (streams close cleanly, long-polls
    answer the task) and the process exits 0, long before SHUTDOWN_TIMEOUT (600 s here)."""
    relay = start_relay(SHUTDOWN_TIMEOUT="600", **QUIET)
    key = relay.create_key("live")
    task = await _held_task(client, relay, key)
    etag = (await _lookup(client, relay, key, task["id"])).headers["etag"]
    held = {**auth(key), "If-None-Match": etag}
    url = f"{relay.url}/v1/tasks/{task['id']}?wait=60"
    async with contextlib.AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(stream(client, relay, key, task["id"]))
                   for _ in range(3)]  # fmt: skip
        for opened in streams:
            assert await opened.next_event() is not None
        polls = [asyncio.create_task(client.get(url, headers=held)) for _ in range(3)]
        # SIGTERM only once the relay holds all six: a request still in a socket buffer when
        # the server stops is refused with the connection, which is not what this tests
        await _until_waiting(client, relay, 6)
        code = await asyncio.wait_for(asyncio.to_thread(relay.terminate, HANG), HANG)
        assert code == 0
        for opened in streams:
            assert await opened.rest() == []  # ended by the server, cleanly
        answers = await asyncio.gather(*polls)
        assert {(a.status_code, a.headers["etag"]) for a in answers} == {(200, etag)}


@pytest.mark.postgresql_only
async def test_a_waiter_on_one_replica_is_woken_by_a_callback_on_another(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """Two replicas on one database: the callback lands on B (its public URL), and the
    long-poll and the stream open on A hear of it through PostgreSQL's notifications (no
    result copies: A's copier would otherwise change the task on A itself)."""
    a = start_relay(db_name="shared", MIRROR_RESULTS="false", **QUIET)
    b = start_relay(db_name="shared", MIRROR_RESULTS="false", **QUIET)
    key = a.create_key("live")
    task = await _held_task(client, b, key)  # GrsAI calls back B
    etag = (await _lookup(client, a, key, task["id"])).headers["etag"]
    held = {**auth(key), "If-None-Match": etag}
    poll = asyncio.create_task(client.get(f"{a.url}/v1/tasks/{task['id']}?wait=60", headers=held))
    async with stream(client, a, key, task["id"], **{"Last-Event-ID": etag.strip('"')}) as live:
        await _finish(client, simulator, task["upstream_id"])
        events = await live.rest()
    answer = await asyncio.wait_for(poll, HANG)
    assert answer.headers["etag"] != etag
    assert events
    assert settled(events[-1]["data"])
