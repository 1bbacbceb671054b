"""Callback delivery: POST task objects to `webHook` URLs, with faults and short retries."""

from __future__ import annotations

import asyncio
import json
import random

import httpx

from service.clock import Clock
from service.simulator.config import SimulatorConfig
from service.simulator.state import CallbackRecord, JSONObject, SimTask, Stats

_HEADERS = {"Content-Type": "application/json", "User-Agent": "grsai-simulator/1"}
MAX_CONNECTIONS = 100


class CallbackSender:
    """Sends one task's callbacks the way its faults say; owns the one outbound HTTP client."""

    def __init__(
        self,
        config: SimulatorConfig,
        clock: Clock,
        stats: Stats,
        rng: random.Random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._stats = stats
        self._rng = rng
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        # At most as many POSTs as the pool has connections: a request never waits inside
        # httpx's pool. (httpcore 1.0 can leak a pool slot for good when a pool-wait times
        # out just as a new connection is assigned to it, which a slow receiver and a busy
        # event loop make likely; the leaked slots add up until every POST is a PoolTimeout.)
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    def _http(self) -> httpx.AsyncClient:
        # Made on first use, inside the running loop, so apps that never call back need none.
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(self._config.callback_timeout),
                limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=20),
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def run(self, task: SimTask) -> None:
        """Drain the task's outbox until its end marker, sending as the faults dictate."""
        outbox = task.outbox
        assert outbox is not None
        faults = task.faults
        held = faults.reorder or faults.late > 0
        pending: list[JSONObject] = []
        while (body := await outbox.get()) is not None:
            if held:
                pending.append(body)
            else:
                await self._send(task, body)
        if not held:
            return
        if faults.late > 0:
            await asyncio.sleep(faults.late)
        if faults.reorder:
            pending = self._shuffled(pending)
        for body in pending:
            await self._send(task, body)

    def _shuffled(self, bodies: list[JSONObject]) -> list[JSONObject]:
        order = list(range(len(bodies)))
        self._rng.shuffle(order)
        if order == sorted(order):  # a shuffle may keep the order; reordering must show
            order.reverse()
        return [bodies[i] for i in order]

    async def _send(self, task: SimTask, body: JSONObject) -> None:
        for _ in range(2 if task.faults.duplicate else 1):
            await self._post_with_retries(task, body)

    async def _post_with_retries(self, task: SimTask, body: JSONObject) -> None:
        assert task.webhook is not None
        retries = self._config.callback_retries
        # Serialised once, here, so the admin report can show the exact bytes each POST carried.
        raw = json.dumps(body, separators=(",", ":")).encode()
        for attempt in range(retries + 1):
            async with self._slots:
                record = CallbackRecord(body, raw, self._clock.now(), attempt=attempt + 1)
                task.callbacks.append(record)
                self._stats.callbacks_sent += 1
                try:
                    response = await self._http().post(task.webhook, content=raw, headers=_HEADERS)
                except httpx.HTTPError as exc:
                    record.error = f"{type(exc).__name__}: {exc}"
                else:
                    record.status = response.status_code
                finally:
                    record.seconds = self._clock.now() - record.time
            if record.status is not None and 200 <= record.status < 300:
                return
            if attempt < retries:
                await asyncio.sleep(self._config.callback_backoff * 2**attempt)
