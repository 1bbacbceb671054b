"""`WatchedClient`: admission, detachment from cancelled callers, and the jammed-pool watchdog.

Transports are injected: `Scripted` answers as each test says and records whether it was
closed, so a "jammed pool" is a transport raising `httpx.PoolTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from service.domain.errors import UpstreamUnavailable
from service.files.download import Downloader, FetchFailed
from service.files.store import LocalAssetStore
from service.upstream.clients import Transports, build_clients
from service.upstream.httppool import WatchedClient
from service.upstream.netguard import UrlGuard
from tests.unit.conftest import MakeRelay, relay_settings
from tests.unit.test_assets_netguard import FakeDns
from tests.unit.test_assets_sniff import png

Answer = Callable[[httpx.Request], Awaitable[httpx.Response]]
URL = "http://upstream.test/x"


class Scripted(httpx.AsyncBaseTransport):
    """A transport answering with `answer`; records its requests and whether it was closed."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Record the request and answer it."""
        self.requests.append(request)
        return await self.answer(request)

    async def aclose(self) -> None:
        """Remember that the client closed its pool."""
        self.closed = True


async def ok(request: httpx.Request) -> httpx.Response:
    """200 at once."""
    return httpx.Response(200, json={"ok": True})


async def jammed(request: httpx.Request) -> httpx.Response:
    """What a pool whose every slot was lost answers."""
    raise httpx.PoolTimeout("no connection available", request=request)


class Gate:
    """An upstream that holds every request until `open()`; counts cancellations it sees."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.arrived = asyncio.Event()
        self.cancelled = 0

    async def answer(self, request: httpx.Request) -> httpx.Response:
        """Hold the request, then answer 200."""
        self.arrived.set()
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return httpx.Response(200, content=b"late")

    def open(self) -> None:
        """Let every held request through."""
        self.opened.set()


def watched(
    *transports: Scripted, capacity: int = 2, pool: float = 1.0
) -> tuple[WatchedClient, list[Scripted]]:
    """A client whose n-th pool uses the n-th transport (the last one repeats)."""
    used: list[Scripted] = []

    def factory() -> httpx.AsyncClient:
        transport = transports[min(len(used), len(transports) - 1)]
        used.append(transport)
        return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, pool=pool))

    return WatchedClient("test", factory, capacity=capacity), used


@pytest.fixture(name="gate")
def _gate() -> Gate:
    return Gate()


async def test_jammed_pool_is_rebuilt_and_the_request_sent_again() -> None:
    """A PoolTimeout from the pool itself rebuilds it; the caller gets the retried answer."""
    first, second = Scripted(jammed), Scripted(ok)
    client, used = watched(first, second)
    response = await client.request("GET", URL)
    assert response.status_code == 200
    assert (used, client.rebuilds, client.jammed) == ([first, second], 1, 1)
    await client.wait_idle()
    assert first.closed is True  # the jammed pool is closed once nothing uses it
    assert client.health() == {"status": "ok", "in_use": "0/2"}
    await client.aclose()


async def test_a_pool_that_stays_jammed_fails_its_health_and_rebuilds_once_per_request() -> None:
    """When the rebuilt pool times out too, the request fails and the client reports it."""
    client, used = watched(Scripted(jammed))
    for expected_rebuilds in (1, 2):
        with pytest.raises(httpx.PoolTimeout):
            await client.request("GET", URL)
        assert client.rebuilds == expected_rebuilds
    health = client.health()
    assert health["status"] == "failing"
    assert "pool jammed" in health["error"]
    assert len(used) == 3
    await client.aclose()


async def test_cancelled_caller_leaves_the_exchange_to_end_by_itself(gate: Gate) -> None:
    """Cancelling a caller mid-request does not reach the transport; the slot is held until
    the exchange ends, then given back."""
    client, _ = watched(Scripted(gate.answer))
    caller = asyncio.create_task(client.request("GET", URL))
    await gate.arrived.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert client.in_flight == 1
    gate.open()
    await client.wait_idle()
    assert (gate.cancelled, client.in_flight) == (0, 0)
    await client.aclose()


async def test_cancelled_stream_caller_closes_the_response_when_it_arrives(gate: Gate) -> None:
    """A streamed request whose caller left is closed in the background, and its slot freed."""
    client, _ = watched(Scripted(gate.answer))

    async def read() -> bytes:
        async with client.stream("GET", URL) as response:
            return await response.aread()

    caller = asyncio.create_task(read())
    await gate.arrived.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    gate.open()
    await client.wait_idle()
    assert (gate.cancelled, client.in_flight) == (0, 0)
    await client.aclose()


class SlowClose(httpx.AsyncByteStream):
    """A body that sends one chunk and then nothing; closing it waits for `closable`."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.closing = asyncio.Event()
        self.closable = asyncio.Event()
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """One chunk, then a body that never ends."""
        yield b"first"
        self.reading.set()
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        """Take as long as the test says (a connection handed back slowly)."""
        self.closing.set()
        await self.closable.wait()
        self.closed = True


async def test_a_stream_cancelled_again_while_closing_keeps_its_slot_until_closed() -> None:
    """A caller cancelled mid-body, then cancelled once more while its response closes (a
    deadline, then a shutdown): the slot is given back only when the close has finished."""
    body = SlowClose()

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    client, _ = watched(Scripted(answer))

    async def read() -> None:
        async with client.stream("GET", URL) as response:
            async for _ in response.aiter_raw():
                pass

    caller = asyncio.create_task(read())
    await body.reading.wait()
    caller.cancel()  # the deadline, mid-body
    await body.closing.wait()
    caller.cancel()  # the shutdown, while the response closes
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert (body.closed, client.in_flight) == (False, 1)  # the connection is not back yet
    body.closable.set()
    await client.wait_idle()
    assert (body.closed, client.in_flight) == (True, 0)
    await client.aclose()


async def test_full_pool_refuses_after_the_pool_timeout_and_reports_it(gate: Gate) -> None:
    """With every slot busy with our own requests, another waits its pool timeout, then gets
    PoolTimeout: the pool is saturated, not jammed, so nothing is rebuilt."""
    client, _ = watched(Scripted(gate.answer), capacity=2, pool=0.01)
    held = [asyncio.create_task(client.request("GET", URL)) for _ in range(2)]
    await gate.arrived.wait()
    with pytest.raises(httpx.PoolTimeout):
        await client.request("GET", URL)
    health = client.health()
    assert (health["status"], health["in_use"]) == ("failing", "2/2")
    assert (client.saturated, client.jammed, client.rebuilds) == (1, 0, 0)
    gate.open()
    await asyncio.gather(*held)
    assert (await client.request("GET", URL)).status_code == 200
    assert client.health()["status"] == "ok"
    await client.aclose()


async def test_old_pool_is_closed_only_after_its_last_request(gate: Gate) -> None:
    """A rebuild leaves requests still running on the old pool alone; it closes after them."""
    calls = 0

    async def first_held_then_jammed(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return await (gate.answer(request) if calls == 1 else jammed(request))

    old, new = Scripted(first_held_then_jammed), Scripted(ok)
    client, _ = watched(old, new)
    running = asyncio.create_task(client.request("GET", URL))
    await gate.arrived.wait()
    assert (await client.request("GET", URL)).status_code == 200
    assert (client.rebuilds, old.closed) == (1, False)
    gate.open()
    assert (await running).content == b"late"
    await client.wait_idle()
    assert (old.closed, new.closed) == (True, False)
    await client.aclose()
    assert new.closed is True


async def test_aclose_cancels_exchanges_whose_callers_left(gate: Gate) -> None:
    """Closing the client ends detached exchanges instead of waiting for their timeouts."""
    client, used = watched(Scripted(gate.answer))
    caller = asyncio.create_task(client.request("GET", URL))
    await gate.arrived.wait()
    caller.cancel()
    await client.aclose()
    assert (gate.cancelled, client.in_flight, used[0].closed) == (1, 0, True)


async def test_the_pool_always_gets_the_clients_pool_timeout() -> None:
    """A short per-request timeout bounds the wait for admission, never the pool's own wait
    (a short one there races the hand-over of a connection)."""
    transport = Scripted(ok)
    client, _ = watched(transport, pool=7.0)
    await client.request("GET", URL, timeout=0.25)
    assert transport.requests[0].extensions["timeout"] == {
        "connect": 0.25,
        "read": 0.25,
        "write": 0.25,
        "pool": 7.0,
    }
    await client.aclose()


async def test_a_slow_client_endpoint_cannot_starve_grsai_calls(tmp_path: Path, gate: Gate) -> None:
    """Deliveries and GrsAI calls use separate pools: deliveries stuck at their limit leave
    GrsAI requests untouched."""
    settings = relay_settings(tmp_path, delivery_max_connections=2, http_pool_timeout=0.01)
    clients = build_clients(
        settings, Transports(grsai=Scripted(ok), deliveries=Scripted(gate.answer))
    )
    stuck = [asyncio.create_task(clients.deliveries.request("POST", URL)) for _ in range(2)]
    await gate.arrived.wait()
    with pytest.raises(httpx.PoolTimeout):
        await clients.deliveries.request("POST", URL)
    assert (await clients.grsai.request("POST", URL)).status_code == 200
    gate.open()
    await asyncio.gather(*stuck)
    await clients.aclose()


async def test_readyz_names_the_client_whose_pool_is_jammed(make_relay: MakeRelay) -> None:
    """A GrsAI pool that stays jammed (rebuilding cannot help) makes /readyz fail, by name."""
    relay = await make_relay(run_poller=True)

    async def no_connection(request: httpx.Request) -> httpx.Response:
        raise httpx.PoolTimeout("no connection available", request=request)

    relay.grsai.on_poll = no_connection
    with pytest.raises(UpstreamUnavailable):
        await relay.upstream.poll("16-lost")
    response = await relay.client.get("/readyz")
    assert response.status_code == 503
    check = response.json()["checks"]["http_grsai"]
    assert check["status"] == "failing"
    assert "pool jammed" in check["error"]
    assert response.json()["checks"]["http_downloads"]["status"] == "ok"


async def test_metrics_show_pool_use_wait_and_rebuilds(make_relay: MakeRelay) -> None:
    """/metrics has in-flight, capacity, wait time and watchdog counts per client."""
    relay = await make_relay()
    calls = 0

    async def jammed_once(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.PoolTimeout("no connection available", request=request)
        return httpx.Response(200, json={"code": -22, "msg": "not found", "data": None})

    relay.grsai.on_poll = jammed_once
    assert await relay.upstream.poll("16-gone") is None
    text = (await relay.client.get("/metrics")).text
    for line in (
        'grsai_relay_http_pool_capacity{client="grsai"} 64.0',
        'grsai_relay_http_pool_capacity{client="downloads"} 16.0',
        'grsai_relay_http_pool_capacity{client="deliveries"} 32.0',
        'grsai_relay_http_pool_in_flight{client="grsai"} 0.0',
        'grsai_relay_http_pool_rebuilds_total{client="grsai"} 1.0',
        'grsai_relay_http_pool_jammed_total{client="grsai"} 1.0',
        'grsai_relay_http_pool_saturated_total{client="grsai"} 0.0',
        'grsai_relay_http_pool_wait_seconds_count{client="grsai"} 1.0',
    ):
        assert line in text.splitlines(), line


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> LocalAssetStore:
    return LocalAssetStore(tmp_path / "assets")


@contextlib.asynccontextmanager
async def picture_host(body: Callable[[], AsyncIterator[bytes]]) -> AsyncIterator[WatchedClient]:
    """A downloads client whose every request is answered 200 with `body()`."""

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    client, _ = watched(Scripted(answer), capacity=4, pool=3.0)
    async with contextlib.aclosing(client):
        yield client


async def test_download_deadline_ends_between_chunks_without_cancelling(
    store: LocalAssetStore,
) -> None:
    """Past its deadline a download stops at the next chunk, without cancelling anything, and
    the failure says the download took too long."""
    clock = [100.0]
    sent: list[int] = []
    cancelled: list[bool] = []

    async def slow_body() -> AsyncIterator[bytes]:
        picture = png(64, 64)
        try:
            for part in (picture[:100], picture[100:200], picture[200:]):
                sent.append(len(part))
                yield part
                clock[0] += 10.0  # the deadline passes while the next part is on its way
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async with picture_host(slow_body) as http:
        guard = UrlGuard(resolver=FakeDns({"files.test": ["93.184.216.34"]}))
        downloader = Downloader(
            http, store, guard, max_bytes=1 << 20, timeout=5.0, now=lambda: clock[0]
        )
        with pytest.raises(FetchFailed, match=r"took longer than 5 s"):
            await downloader.fetch("https://files.test/a.png")
    assert (sent, cancelled) == ([100, 100], [])


async def test_download_timeouts_never_reach_past_the_deadline(store: LocalAssetStore) -> None:
    """Each download request's timeouts are the client's, capped by the time left."""
    sent: list[httpx.Request] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, content=png())

    client, _ = watched(Scripted(answer), pool=3.0)
    guard = UrlGuard(resolver=FakeDns({"files.test": ["93.184.216.34"]}))
    downloader = Downloader(client, store, guard, max_bytes=1 << 20, timeout=4.0, now=lambda: 0.0)
    await downloader.fetch("https://files.test/a.png")
    assert sent[0].extensions["timeout"] == {"connect": 4.0, "read": 4.0, "write": 4.0, "pool": 3.0}
    await client.aclose()
