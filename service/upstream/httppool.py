"""An `httpx.AsyncClient` whose connection pool cannot stay jammed.

httpcore (1.0.9, the newest release) loses a pool slot for good when a request is cancelled
after the pool picked a connection for it but before that connection was in use (encode/httpcore
issue 1093): with every slot lost, each later request fails with `PoolTimeout` while the server
is healthy. Two windows make that happen: a cancellation from outside during the send, and the
pool's own pool timeout firing just as a queued request is handed a connection. `WatchedClient`
closes both and keeps a watchdog for whatever remains:

- Admission: at most `capacity` requests enter the pool (as many as it has connections), so the
  pool never queues a request and its pool timeout never races a hand-over. Waiting happens in
  front of the pool, where a timeout or a cancellation costs nothing.
- Detachment: every exchange runs as its own task, shielded from the caller, until the response
  headers are in (or httpx's own timeouts end it). A caller cancelled meanwhile (a deadline, a
  worker stopped at shutdown) returns at once; the exchange finishes in the background and gives
  its slot back. Reading a streamed body may be cancelled: httpcore cleans that up.
- Watchdog: with admission, a `PoolTimeout` from the pool itself means slots are held by no
  request (fewer than `capacity` of ours were inside). The client is rebuilt on a fresh pool, the
  old one is closed once its last request ends, and the request is sent once more (a
  `PoolTimeout` proves it never left).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("grsai_relay.http")

Timeout = float | httpx.Timeout | None  # None: the client's default timeout
ClientFactory = Callable[[], httpx.AsyncClient]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """What one client's pool is doing, for /metrics."""

    name: str
    in_flight: int
    capacity: int
    rebuilds: int
    saturated: int  # requests that found every connection busy with our own for too long
    jammed: int  # requests that got PoolTimeout from the pool itself


@dataclass(eq=False, slots=True)
class _Generation:
    """One `httpx.AsyncClient` (one pool); replaced when it jams."""

    client: httpx.AsyncClient
    users: int = 0
    retired: bool = False
    jammed: bool = False


@dataclass(eq=False, slots=True)
class _Lease:
    """One admitted request's pool slot, given back exactly once."""

    owner: WatchedClient
    generation: _Generation | None = None
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.owner._give_back(self)


@dataclass(frozen=True, slots=True)
class _Call:
    """The arguments of one request, to build it again on a rebuilt client."""

    method: str
    url: str
    content: bytes | None
    json: Any
    params: Mapping[str, str] | None
    headers: Mapping[str, str] | None
    timeout: Timeout
    extensions: dict[str, Any] | None

    def build(self, client: httpx.AsyncClient) -> httpx.Request:
        request = client.build_request(
            self.method,
            self.url,
            content=self.content,
            json=self.json,
            params=self.params,
            headers=self.headers,
            timeout=httpx.USE_CLIENT_DEFAULT if self.timeout is None else self.timeout,
            extensions=self.extensions,
        )
        # The pool itself always gets the client's pool timeout: after admission it hands a
        # connection over at once, and a short timeout could fire just as it does (the race
        # that loses a slot). A request's own pool timeout bounds its wait for admission.
        timeouts = request.extensions.get("timeout", {})
        request.extensions["timeout"] = {**timeouts, "pool": client.timeout.pool}
        return request


def _settle(job: asyncio.Task[httpx.Response], lease: _Lease) -> None:
    """A buffered exchange ended: give its slot back, and take its error even if nobody waits
    for it any more (the caller was cancelled)."""
    lease.release()
    if not job.cancelled():
        job.exception()


class WatchedClient:
    """Owns an `httpx.AsyncClient` built by `factory`; callers never see it rebuilt."""

    def __init__(
        self,
        name: str,
        factory: ClientFactory,
        *,
        capacity: int,
        observe_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self._factory = factory
        self._observe_wait = observe_wait
        self._current = _Generation(factory())
        self._slots = asyncio.Semaphore(capacity)
        self._retired: set[_Generation] = set()
        self._jobs: set[asyncio.Task[httpx.Response]] = set()  # exchanges, detached from callers
        self._cleanups: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._starved: str | None = None
        self._closed = False
        self.in_flight = 0
        self.rebuilds = 0
        self.saturated = 0
        self.jammed = 0

    @property
    def client(self) -> httpx.AsyncClient:
        """The client in use now (for reading its settings; send through this wrapper)."""
        return self._current.client

    def stats(self) -> PoolStats:
        """Pool use and watchdog counts."""
        return PoolStats(
            self.name, self.in_flight, self.capacity, self.rebuilds, self.saturated, self.jammed
        )

    def health(self) -> dict[str, str]:
        """A readiness check: failing while no request can get a connection."""
        use = f"{self.in_flight}/{self.capacity}"
        if self._current.jammed:
            error = f"pool jammed: its slots are held by no request (rebuilt {self.rebuilds}x)"
            return {"status": "failing", "error": error, "in_use": use}
        if self._starved is not None:
            return {"status": "failing", "error": self._starved, "in_use": use}
        return {"status": "ok", "in_use": use}

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109  # httpx's own timeouts are the point here
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send a request and read its whole response (httpx's timeouts bound it)."""
        call = _Call(method, url, content, json, params, headers, timeout, extensions)
        lease = await self._admit(call)
        job = self._detach(self._exchange(lease, call, stream=False))
        job.add_done_callback(lambda done: _settle(done, lease))
        return await asyncio.shield(job)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109  # httpx's own timeouts are the point here
        extensions: dict[str, Any] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send a request and yield the response with its body still to read; closed on exit."""
        call = _Call(method, url, content, None, None, headers, timeout, extensions)
        lease = await self._admit(call)
        job = self._detach(self._exchange(lease, call, stream=True))
        try:
            response = await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(lambda done: self._abandon(done, lease))
            raise
        except BaseException:
            lease.release()
            raise
        try:
            yield response
        finally:
            # The slot is given back only once the connection is back in the pool: closing runs
            # as its own task, so a second cancellation (a shutdown during a deadline's clean-up)
            # cannot cut it short and free the slot while the pool still holds the connection.
            closing = self._spawn(self._close(response, lease))
            await asyncio.shield(closing)

    async def wait_idle(self) -> None:
        """Wait until no request is in flight (detached ones included)."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Close for good: detached exchanges still running are cancelled first."""
        self._closed = True
        while self._jobs:
            for job in list(self._jobs):
                job.cancel()
            await asyncio.gather(*self._jobs, return_exceptions=True)
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        for generation in (*self._retired, self._current):
            await generation.client.aclose()
        self._retired.clear()

    async def _admit(self, call: _Call) -> _Lease:
        """Wait (up to the pool timeout) for one of `capacity` slots."""
        started = time.perf_counter()
        limit = httpx.Timeout(call.timeout if call.timeout is not None else self.client.timeout)
        try:
            if self._slots.locked():
                async with asyncio.timeout(limit.pool):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()  # a free slot: taken without waiting
        except TimeoutError as exc:
            self.saturated += 1
            self._starved = (
                f"no free connection within {limit.pool:g} s "
                f"(all {self.capacity} busy with our own requests)"
            )
            raise httpx.PoolTimeout(f"{self.name}: {self._starved}") from exc
        finally:
            if self._observe_wait is not None:
                self._observe_wait(time.perf_counter() - started)
        self._starved = None
        self.in_flight += 1
        self._idle.clear()
        return _Lease(self)

    def _detach(
        self, exchange: Coroutine[Any, Any, httpx.Response]
    ) -> asyncio.Task[httpx.Response]:
        job = asyncio.create_task(exchange, name=f"http-{self.name}")
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job

    async def _exchange(self, lease: _Lease, call: _Call, *, stream: bool) -> httpx.Response:
        for attempt in (1, 2):
            generation = self._current
            lease.generation = generation
            generation.users += 1
            try:
                response = await generation.client.send(
                    call.build(generation.client), stream=stream
                )
            except httpx.PoolTimeout:
                self.jammed += 1
                generation.jammed = True
                if attempt == 2 or not self._rebuild(generation):
                    raise
                self._give_back_generation(generation)
                continue
            except httpx.HTTPError:
                generation.jammed = False  # it got a connection: the pool works
                raise
            generation.jammed = False
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _rebuild(self, generation: _Generation) -> bool:
        """The pool itself timed out: replace it. True when a retry may help."""
        if self._closed:
            return False
        if generation is self._current:
            log.warning(
                "%s HTTP pool jammed (PoolTimeout with %d of %d slots ours); rebuilding it",
                self.name,
                self.in_flight - 1,
                self.capacity,
                extra={"event": "http_pool_rebuilt", "client": self.name},
            )
            self.rebuilds += 1
            self._current = _Generation(self._factory())
            generation.retired = True
            self._retired.add(generation)
        return True

    def _give_back(self, lease: _Lease) -> None:
        if lease.generation is not None:
            self._give_back_generation(lease.generation)
        self._slots.release()
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    def _give_back_generation(self, generation: _Generation) -> None:
        generation.users -= 1
        if generation.retired and generation.users == 0 and generation in self._retired:
            self._retired.discard(generation)
            self._spawn(generation.client.aclose())

    def _abandon(self, job: asyncio.Task[httpx.Response], lease: _Lease) -> None:
        """The caller left while its streamed request was being sent: close what arrives."""
        if job.cancelled() or job.exception() is not None:
            lease.release()
            return

        self._spawn(self._close(job.result(), lease))

    @staticmethod
    async def _close(response: httpx.Response, lease: _Lease) -> None:
        try:
            await response.aclose()
        finally:
            lease.release()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run clean-up (closing a response or a retired pool) in the background, uncancelled."""
        task = asyncio.create_task(self._quietly(work), name=f"http-{self.name}-cleanup")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return task

    async def _quietly(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:  # nobody awaits clean-up: say what failed instead of losing it
            log.exception("%s HTTP clean-up failed", self.name)
