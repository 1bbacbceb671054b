"""The relay's outbound HTTP clients: one per purpose, each with its own pool and watchdog.

GrsAI calls (submit, poll, callback verification), result downloads and client deliveries each
get their own pool, so a slow file host or a slow client endpoint can hold only its own
connections: GrsAI verification never waits behind them.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import httpx

from service.upstream.httppool import WatchedClient

WaitObserver = Callable[[str], Callable[[float], None]]  # client name -> observe(seconds)


class ClientLimits(Protocol):
    """The limits and default timeouts of the three clients (`Settings` has them all)."""

    @property
    def upstream_max_connections(self) -> int: ...
    @property
    def upstream_timeout(self) -> float: ...
    @property
    def upstream_connect_timeout(self) -> float: ...
    @property
    def asset_max_connections(self) -> int: ...
    @property
    def asset_stall_timeout(self) -> float: ...
    @property
    def delivery_max_connections(self) -> int: ...
    @property
    def delivery_timeout(self) -> float: ...
    @property
    def http_pool_timeout(self) -> float: ...


@dataclass(frozen=True, slots=True)
class HttpClients:
    """The three outbound clients."""

    grsai: WatchedClient
    downloads: WatchedClient
    deliveries: WatchedClient

    def __iter__(self) -> Iterator[WatchedClient]:
        return iter((self.grsai, self.downloads, self.deliveries))

    async def aclose(self) -> None:
        """Close every client."""
        for client in self:
            await client.aclose()


@dataclass(frozen=True, slots=True)
class Transports:
    """Injected transports (tests); None builds a real one. Downloads and deliveries fall back
    to the GrsAI transport, so one fake can answer everything."""

    grsai: httpx.AsyncBaseTransport | None = None
    downloads: httpx.AsyncBaseTransport | None = None
    deliveries: httpx.AsyncBaseTransport | None = None


def watched_client(
    name: str,
    *,
    capacity: int,
    timeout: httpx.Timeout,
    transport: httpx.AsyncBaseTransport | None = None,
    tls: ssl.SSLContext | None = None,
    observe_wait: Callable[[float], None] | None = None,
) -> WatchedClient:
    """A `WatchedClient` whose rebuilds get a fresh pool (or the injected transport again).

    `tls` is shared by every pool it builds (making one reads the CA bundle: a third of a
    second on a busy machine).
    """
    limits = httpx.Limits(max_connections=capacity, max_keepalive_connections=max(1, capacity // 4))
    if transport is None and tls is None:
        tls = httpx.create_ssl_context()

    def factory() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=transport,
            verify=tls if tls is not None else True,
            timeout=timeout,
            limits=limits,
            follow_redirects=False,
        )

    return WatchedClient(name, factory, capacity=capacity, observe_wait=observe_wait)


def stream_client(
    settings: ClientLimits,
    capacity: int,
    transport: httpx.AsyncBaseTransport | None = None,
    observe: WaitObserver | None = None,
) -> WatchedClient:
    """The pool of stream mode's GrsAI connections (one per open stream), apart from the
    `grsai` pool, so that long-lived streams never starve submits and polls."""
    return watched_client(
        "grsai_streams",
        capacity=max(1, capacity),
        timeout=httpx.Timeout(
            settings.upstream_timeout,
            connect=settings.upstream_connect_timeout,
            pool=settings.http_pool_timeout,
        ),
        transport=transport,
        observe_wait=observe("grsai_streams") if observe is not None else None,
    )


def build_clients(
    settings: ClientLimits,
    transports: Transports | None = None,
    observe: WaitObserver | None = None,
) -> HttpClients:
    """The three clients with their limits and default timeouts from settings."""
    given = transports or Transports()
    grsai = given.grsai
    downloads = given.downloads or grsai
    deliveries = given.deliveries or grsai
    tls = httpx.create_ssl_context() if None in (grsai, downloads, deliveries) else None
    pool = settings.http_pool_timeout
    connect = settings.upstream_connect_timeout

    def make(
        name: str,
        capacity: int,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> WatchedClient:
        return watched_client(
            name,
            capacity=capacity,
            timeout=httpx.Timeout(timeout, connect=connect, pool=pool),
            transport=transport,
            tls=tls,
            observe_wait=observe(name) if observe is not None else None,
        )

    return HttpClients(
        grsai=make("grsai", settings.upstream_max_connections, settings.upstream_timeout, grsai),
        downloads=make(
            "downloads", settings.asset_max_connections, settings.asset_stall_timeout, downloads
        ),
        deliveries=make(
            "deliveries", settings.delivery_max_connections, settings.delivery_timeout, deliveries
        ),
    )
