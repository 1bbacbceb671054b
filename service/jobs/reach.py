"""Whether GrsAI can reach us: the public URL's self-check, and callbacks that stopped arriving.

`/readyz` reports both as warnings, not failures: tasks still finish by polling, and a relay
taken out of its load balancer because a tunnel died would help nobody. Each state change is
logged once, so a developer watching the terminal hears of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import httpx

from service.clock import Clock, rfc3339
from service.domain.credentials import Entropy
from service.storage import Storage
from service.tunnel.probe import probe_public_url
from service.tunnel.public import Change, PublicAddress

log = logging.getLogger("grsai_relay.reach")

Report = dict[str, str]


class CallbackHealth:
    """Callbacks this process received, and callback-mode tasks that got none in time.

    The poller calls `silent` when it polls a callback-mode task that has heard nothing since it
    was submitted: its silence window passed without a single callback. While such tasks keep
    coming and no callback arrives, callbacks have stopped (or never started) arriving.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.last_heard: float | None = None
        self.silent_tasks = 0  # since the last callback
        self.last_silent: float | None = None

    def heard(self) -> None:
        """A callback with a valid token arrived."""
        if self.silent_tasks:
            log.info("callbacks arrive again (after %d silent tasks)", self.silent_tasks)
        self.last_heard, self.silent_tasks = self._clock.now(), 0

    def silent(self, task_id: str) -> None:
        """A callback-mode task heard nothing within CALLBACK_SILENCE of its submit."""
        self.silent_tasks += 1
        self.last_silent = self._clock.now()
        if self.silent_tasks == 1:
            log.warning(
                "task %s got no callback within CALLBACK_SILENCE (last callback: %s): is the "
                "public URL reachable from the internet? Tasks still finish by polling.",
                task_id,
                self._when(self.last_heard),
            )

    def report(self) -> Report:
        """The `/readyz` check `callbacks`."""
        last = self._when(self.last_heard)
        if not self.silent_tasks:
            return {"status": "ok", "last_callback": last}
        detail = (
            f"{self.silent_tasks} callback-mode task(s) got no callback within CALLBACK_SILENCE,"
            f" the latest at {self._when(self.last_silent)}; last callback: {last}."
            " They finish by polling; check that the public URL reaches this relay."
        )
        return {"status": "warning", "last_callback": last, "detail": detail}

    @staticmethod
    def _when(at: float | None) -> str:
        return rfc3339(at) or "none yet"


Probe = Callable[[str, str], Awaitable[tuple[bool, str]]]


class PublicWatch:
    """Follows the public address: probes each new URL, and when callbacks sent to an address
    can no longer arrive (the tunnel dropped, or came back elsewhere) moves every open
    callback-mode task to polling at once instead of waiting out CALLBACK_SILENCE."""

    def __init__(
        self,
        public: PublicAddress,
        storage: Storage,
        clock: Clock,
        entropy: Entropy,
        *,
        on_switched: Callable[[], None],
        check: bool = True,
        probe: Probe | None = None,
        probe_timeout: float = 10.0,
    ) -> None:
        self._public = public
        self._storage = storage
        self._clock = clock
        self._entropy = entropy
        self._on_switched = on_switched
        self._check_urls = check  # PUBLIC_URL_CHECK
        self._probe = probe or self._http_probe
        self._probe_timeout = probe_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self.probe_result: tuple[str, bool, str] | None = None  # (url, ok, detail)
        self.switched = 0

    def start(self, *, check_first: bool = True) -> None:
        """Listen for changes; probe the current URL now when `check_first`."""
        self._unsubscribe = self._public.subscribe(self._changed)
        if check_first and self._check_urls and self._public.url is not None:
            self._spawn(self._check(self._public.url))

    async def stop(self) -> None:
        """Stop listening and cancel a probe in flight."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _changed(self, change: Change) -> None:
        if change.lost:
            self._spawn(self._switch(change))
        if change.url is not None and self._check_urls:
            self._spawn(self._check(change.url))

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _switch(self, change: Change) -> None:
        why = "is down" if change.url is None else f"moved to {change.url}"
        try:
            count = await self._storage.switch_to_polling(self._clock.now())
        except Exception:  # the storage is down too: the silence polls still come
            log.exception("could not switch callback-mode tasks to polling")
            return
        self.switched += count
        log.warning(
            "public URL %s %s: %d open callback-mode task(s) switched to polling",
            change.previous,
            why,
            count,
        )
        if count:
            self._on_switched()

    async def _check(self, url: str) -> None:
        ok, detail = await self._probe(url, self._entropy.token(18))
        if self._public.url != url:
            return  # moved on meanwhile: that change brings its own check
        self.probe_result = (url, ok, detail)
        if ok:
            log.info("public URL check: %s", detail)
        else:
            log.warning(
                "public URL check failed: %s; callbacks cannot arrive, tasks finish by polling",
                detail,
            )

    async def _http_probe(self, url: str, nonce: str) -> tuple[bool, str]:
        async with httpx.AsyncClient() as http:  # SSL_CERT_FILE and proxies as the user set
            result = await probe_public_url(http, url, nonce, within=self._probe_timeout)
        return result.ok, result.detail

    def report(self) -> Report:
        """The `/readyz` check `public_url`."""
        url = self._public.url
        if url is None:
            if self._public.tunnel is None:
                return {"status": "ok", "mode": "poll"}
            reason = self._public.reason or "not up"
            return {
                "status": "warning",
                "detail": f"the {self._public.tunnel} tunnel is down: {reason}",
            }
        found: Report = {"status": "ok", "url": url}
        if self._public.tunnel is not None:
            found["tunnel"] = self._public.tunnel
        if not self._check_urls:
            found["probe"] = "off"
        elif self.probe_result is None or self.probe_result[0] != url:
            found["probe"] = "pending"
        elif not self.probe_result[1]:
            found |= {"status": "warning", "probe": "failed", "detail": self.probe_result[2]}
        else:
            found["probe"] = "ok"
        return found
