"""The outbound HTTP clients under cancellation storms, against a real server on loopback.

httpcore 1.0.9 loses pool slots for good when requests are cancelled under contention
(encode/httpcore issue 1093). These tests drive the clients the app builds through the ways the
relay ends requests (a deadline around a request, every job cancelled at shutdown, httpx's own
short timeouts) and then ask for one ordinary request: it must get a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.domain.errors import UpstreamError
from service.files.download import Downloader, FetchFailed
from service.files.store import LocalAssetStore
from service.upstream.clients import HttpClients, build_clients
from service.upstream.grsai import GrsaiClient
from service.upstream.httppool import Timeout, WatchedClient
from service.upstream.netguard import UrlGuard, parse_networks
from tests.e2e.faulty_upstream import FaultyUpstream
from tests.unit.conftest import relay_settings

pytestmark = [pytest.mark.e2e, pytest.mark.no_database]

Send = Callable[[str, Timeout], Coroutine[Any, Any, Any]]
Settle = Callable[[], Awaitable[None]]


@pytest.fixture(name="upstream")
async def _upstream() -> AsyncIterator[FaultyUpstream]:
    server = await FaultyUpstream().start()
    yield server
    await server.close()


@contextlib.asynccontextmanager
async def app_clients(
    tmp_path: Path, upstream: FaultyUpstream, **changes: Any
) -> AsyncIterator[HttpClients]:
    """The three clients exactly as the app factory builds them (real transports)."""
    settings = relay_settings(tmp_path, grsai_base_url=upstream.url, **changes)
    clients = build_clients(settings)
    try:
        yield clients
    finally:
        await clients.aclose()


async def churn(send: Send, url: str, *, workers: int, calls: int, end: Callable[[], Any]) -> None:
    """`calls` requests from `workers` loops, each ended as `end()` says; failures are expected."""
    left = calls

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            with contextlib.suppress(httpx.HTTPError, TimeoutError):
                await end()(send, url)

    await asyncio.gather(*(loop() for _ in range(workers)))


async def storm(
    send: Send, upstream: FaultyUpstream, settle: Settle, *, capacity: int, calls: int
) -> None:
    """Cancel requests the ways the relay does, with twice as many callers as connections."""
    rng = random.Random(20)

    def deadline() -> Callable[[Send, str], Awaitable[Any]]:
        # what Downloader.fetch did: asyncio.timeout around the request
        async def call(send: Send, url: str) -> Any:
            async with asyncio.timeout(rng.uniform(0, 0.03)):
                return await send(url, None)

        return call

    def own_timeout() -> Callable[[Send, str], Awaitable[Any]]:
        # httpx's own timeouts, the pool timeout included, short enough to fire under contention
        limit = rng.uniform(0.001, 0.03)
        return lambda send, url: send(url, limit)

    await churn(send, f"{upstream.url}/slow", workers=2 * capacity, calls=calls, end=deadline)
    await settle()
    # a shutdown: every poll or job cancelled at once, holding a connection or waiting for one
    stalled = [asyncio.create_task(send(f"{upstream.url}/stall", None)) for _ in range(capacity)]
    queued = [asyncio.create_task(send(f"{upstream.url}/slow", None)) for _ in range(capacity)]
    await upstream.wait_stalled(capacity)
    for task in stalled + queued:
        task.cancel()
    await asyncio.gather(*stalled, *queued, return_exceptions=True)
    await settle()
    await churn(send, f"{upstream.url}/slow", workers=2 * capacity, calls=calls, end=own_timeout)
    await settle()


async def test_grsai_client_survives_a_cancellation_storm(
    tmp_path: Path, upstream: FaultyUpstream
) -> None:
    """After a storm of cancelled requests at full contention, the GrsAI client still connects."""
    async with app_clients(tmp_path, upstream) as clients:
        grsai = clients.grsai

        async def send(url: str, limit: Timeout) -> httpx.Response:
            return await grsai.request("POST", url, json={}, timeout=limit)

        await storm(
            send, upstream, lambda: settle(upstream, grsai), capacity=grsai.capacity, calls=1500
        )
        fresh = await grsai.request("POST", f"{upstream.url}/ok", json={}, timeout=5.0)
        assert fresh.status_code == 200
        assert (grsai.in_flight, grsai.rebuilds, grsai.jammed) == (0, 0, 0)


async def settle(upstream: FaultyUpstream, *clients: WatchedClient) -> None:
    """Let the upstream go of everything it holds until no client has a request in flight."""
    while True:
        upstream.release()
        idle: asyncio.Future[Any] = asyncio.gather(*(c.wait_idle() for c in clients))
        stalled: asyncio.Future[Any] = asyncio.ensure_future(upstream.wait_stalled(1))
        done, _ = await asyncio.wait({idle, stalled}, return_when=asyncio.FIRST_COMPLETED)
        for waiting in (idle, stalled):
            waiting.cancel()
        await asyncio.gather(idle, stalled, return_exceptions=True)
        if idle in done:
            return


async def test_soak_leaves_every_client_usable(tmp_path: Path, upstream: FaultyUpstream) -> None:
    """Thousands of calls on all three clients with stalls, resets and cancellations: each
    client answers an ordinary request afterwards, and no pool needed rebuilding."""
    rng = random.Random(4)
    async with app_clients(
        tmp_path,
        upstream,
        upstream_max_connections=12,
        asset_max_connections=4,
        delivery_max_connections=6,
        upstream_timeout=0.2,
        http_pool_timeout=0.5,
        asset_stall_timeout=0.05,
    ) as clients:
        store = LocalAssetStore(tmp_path / "soak-assets")
        guard = UrlGuard(parse_networks("127.0.0.0/8"))
        downloads = {
            patience: Downloader(
                clients.downloads, store, guard, max_bytes=1 << 20, timeout=patience
            )
            for patience in (5.0, 0.01)
        }
        polls = {b: GrsaiClient(clients.grsai, f"{upstream.url}/{b}", "sk-soak") for b in FAULTS}
        endings: Counter[str] = Counter()
        started = 0

        def call(kind: str) -> Awaitable[Any]:
            behaviour = rng.choice(FAULTS)
            if kind == "poll":
                return polls[behaviour].poll("7-soak", within=rng.choice(WITHIN))
            if kind == "download":
                return downloads[rng.choice((5.0, 0.01))].fetch(
                    f"{upstream.url}/{behaviour}/picture.png"
                )
            return clients.deliveries.request(
                "POST", f"{upstream.url}/{behaviour}/hook", content=b"{}", timeout=0.1
            )

        async def worker(kind: str, budget: int) -> None:
            nonlocal started
            while started < budget:
                started += 1
                try:
                    if rng.random() < 0.2:  # a deadline from outside, as Downloader's was
                        async with asyncio.timeout(rng.uniform(0, 0.02)):
                            await call(kind)
                    else:
                        await call(kind)
                    endings[f"{kind}:ok"] += 1
                except (UpstreamError, FetchFailed, httpx.HTTPError, TimeoutError) as exc:
                    endings[f"{kind}:{type(exc).__name__}"] += 1

        for wave in range(1, WAVES + 1):
            workers = [
                asyncio.create_task(worker(kind, wave * WAVE_CALLS))
                for kind, count in (("poll", 24), ("download", 8), ("delivery", 12))
                for _ in range(count)
            ]
            # the wave ends like a shutdown: once its calls have started, every worker is
            # cancelled wherever it is
            _, pending = await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await settle(upstream, *clients)

        assert started >= 3000
        assert {"reset", "stall", "trickle", "ok", "slow"} <= set(upstream.seen)
        assert {"poll:ok", "download:ok", "delivery:ok"} <= set(endings), endings
        fetched = await downloads[5.0].fetch(f"{upstream.url}/trickle/picture.png")
        assert fetched.kind.content_type == "image/png"
        assert await polls["ok"].poll("7-soak") is not None
        delivered = await clients.deliveries.request("POST", f"{upstream.url}/ok/hook")
        assert delivered.status_code == 200
        assert [(c.name, c.in_flight, c.rebuilds, c.jammed) for c in clients] == [
            (name, 0, 0, 0) for name in ("grsai", "downloads", "deliveries")
        ]


FAULTS = ("ok", "ok", "ok", "slow", "stall", "reset", "trickle")
WITHIN: tuple[float | None, ...] = (None, 0.05, 0.2)
WAVES = 10
WAVE_CALLS = 300
