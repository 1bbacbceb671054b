"""A tunnel in its own thread with its own event loop, beside the server.

The tunnel must be up before the app is built (its URL is the public URL of the first task),
must outlive every run of the app, and must not share the server's loop, which uvicorn owns.
So the CLI starts it here, waits for its URL (or a one-line error), and stops it after the
server has stopped. Every `interval` seconds the thread asks the tunnel how it is and reports
each change to the `PublicAddress` (which tells the app) and through `say` (which tells the
person at the terminal).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable

from service.tunnel.drivers import Tunnel, TunnelError
from service.tunnel.public import PublicAddress

log = logging.getLogger("grsai_relay.tunnel")


class TunnelThread:
    """Runs one tunnel: `start` returns its public URL, `stop` takes it down."""

    def __init__(
        self,
        tunnel: Tunnel,
        public: PublicAddress,
        local_url: str,
        *,
        start_timeout: float,
        interval: float = 2.0,
        say: Callable[[str], None] = print,
    ) -> None:
        self._tunnel = tunnel
        self._public = public
        self._local_url = local_url
        self._start_timeout = start_timeout
        self._interval = interval
        self._say = say
        self._ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name=f"tunnel-{tunnel.name}")

    def start(self) -> str:
        """Open the tunnel; return its URL, or raise TunnelError (the thread has then ended)."""
        self._thread.start()
        try:
            return self._ready.result()
        except TunnelError:
            self._thread.join()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        """Close the tunnel and end the thread (idempotent)."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run())
        finally:
            loop.close()

    async def _run(self) -> None:
        self._stopping = asyncio.Event()
        try:
            # a grace beyond the tool's own deadline, so that its more precise reason wins
            within = self._start_timeout + 5.0
            url = await asyncio.wait_for(self._tunnel.open(self._local_url), within)
        except (TunnelError, TimeoutError, OSError) as exc:
            await self._tunnel.close()
            message = str(exc) if isinstance(exc, TunnelError) else ""
            if isinstance(exc, TimeoutError):
                message = f"the {self._tunnel.name} tunnel did not come up within"
                message += f" {within:g} s"
            self._ready.set_exception(TunnelError(message or f"{self._tunnel.name}: {exc}"))
            return
        self._public.set(url, "")
        self._ready.set_result(url)
        try:
            await self._watch(url)
        finally:
            await self._tunnel.close()

    async def _watch(self, current: str | None) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
                return
            try:
                url, why = await self._tunnel.status()
            except Exception as exc:  # a broken status call is a down tunnel, not a dead thread
                url, why = None, f"{type(exc).__name__}: {exc}"
            if url == current:
                continue
            if url is None:
                self._say(f"tunnel down: {why}")
            elif current is None:
                self._say(f"tunnel up {url}")
            else:
                self._say(f"tunnel moved {url}")
            self._public.set(url, why)
            current = url
