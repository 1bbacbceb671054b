"""Signed callbacks to the client's own URL: the outbox worker.

Each delivery (an outbox row written with the state change that caused it) is POSTed with
Standard Webhooks headers until the client answers 2xx within the timeout. 3xx counts as a
failure (redirects are not followed); `Retry-After` is honoured within bounds; 410 Gone stops
all deliveries to that URL; after the last scheduled retry the delivery is `dead`, visible and
replayable. The URL is vetted against SSRF at every send and the connection goes to the vetted
address. Concurrency is bounded overall and per destination host, so one slow client never
holds up the others.

The body is made at send time from the task as it is: the relay's event envelope, or, for a
task with GrsAI-shaped callbacks, GrsAI's own flat task object (result URLs as signed links to
our stored copies; a progress event shows the task as it was at that progress). A progress
event whose task is final by the time it is sent is dropped (dead, never sent), so the
client's view of its task never goes back to running.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from service.clock import Clock, rfc3339
from service.domain.errors import RelayError
from service.domain.grsai_shape import progress_object, task_object
from service.domain.links import file_link
from service.domain.outbox import SUPERSEDED, host_of, superseded
from service.domain.records import Attempt, Delivery, Task
from service.jobs.worker import QueueWorker
from service.metrics import Metrics
from service.storage import Storage
from service.upstream.httppool import WatchedClient
from service.upstream.netguard import UrlGuard, UrlRefused
from service.upstream.signing import signed_headers

log = logging.getLogger("grsai_relay.delivery")


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How deliveries are paced (all seconds)."""

    schedule: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    timeout: float = 15.0
    retry_after_max: float = 86400.0
    concurrency: int = 16
    per_host: int = 4
    lease: float = 60.0
    link_ttl: float = 604800.0  # RESULT_LINK_SECONDS: how long result links in GrsAI bodies last


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds asked for by a `Retry-After` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value[:9])
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class Deliverer(QueueWorker):
    """Sends due deliveries on a tick (or at once when kicked)."""

    def __init__(
        self,
        storage: Storage,
        http: WatchedClient,
        guard: UrlGuard,
        clock: Clock,
        policy: DeliveryPolicy,
        *,
        base_url: Callable[[], str],
        tick: float = 1.0,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__("deliverer", tick, log)
        self._storage = storage
        self._http = http
        self.guard = guard
        self._clock = clock
        self._policy = policy
        self._base_url = base_url
        self._rng = rng or random.Random()
        self._metrics = metrics

    async def run_once(self) -> int:
        """Start sends for due deliveries within the overall and per-host limits."""
        free = self._policy.concurrency - len(self.running)
        if free <= 0:
            return 0
        now = self._clock.now()
        busy = Counter(self.running.values())
        claimed = await self._storage.claim_deliveries(
            now, now + self._policy.lease + self._policy.timeout, free, busy, self._policy.per_host
        )
        for delivery in claimed:
            self.launch(self.send(delivery), f"deliver-{delivery.id}", host_of(delivery.url))
        return len(claimed)

    def _body(self, delivery: Delivery, task: Task, secret: str, now: float) -> bytes:
        """The delivery's body, made from the task as it is now."""
        data: dict[str, object]
        if task.callback_format == "grsai":
            if delivery.progress is not None:
                data = progress_object(task, delivery.progress)
            else:
                base, expires = self._base_url(), int(now + self._policy.link_ttl)
                data = task_object(task, lambda n: file_link(base, secret, task.id, n, expires))
        else:
            data = {
                "type": delivery.event_type,
                "timestamp": rfc3339(delivery.event_at),
                "data": task.to_json(self._base_url()),
            }
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

    async def send(self, delivery: Delivery) -> None:
        """One attempt: vet, sign, POST, record the outcome and schedule what comes next."""
        now = self._clock.now()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        started = time.perf_counter()
        task = await self._storage.task(delivery.task_id)
        if task is not None and superseded(delivery, task.status):
            await self._drop(delivery, now)
            return
        secrets = await self._storage.signing_secrets(delivery.api_key_id, now)
        try:
            if task is None or not secrets:
                raise UrlRefused("the task or its API key's signing secret no longer exists")
            body = self._body(delivery, task, secrets[0], now)
            target = await self.guard.vet(delivery.url)
            headers = dict(signed_headers(secrets, delivery.id, int(now), body))
            headers["Host"] = target.host_header
            headers["User-Agent"] = "grsai-relay"
            response = await self._http.request(
                "POST",
                target.url,
                content=body,
                headers=headers,
                timeout=self._policy.timeout,
                extensions={"sni_hostname": target.server_name},
            )
            status = response.status_code
            retry_after = retry_after_seconds(response.headers.get("retry-after"), now)
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (
                    " (redirects are not followed)" if 300 <= status < 400 else ""
                )
        except UrlRefused as exc:
            error = f"refused: {exc}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        latency = (time.perf_counter() - started) * 1000
        attempt = Attempt(delivery.id, now, status, round(latency, 1), error)
        self._advance(
            delivery,
            attempt,
            refused=error is not None and error.startswith("refused"),
            retry_after=retry_after,
        )
        if self._metrics is not None:
            self._metrics.deliveries.labels(delivery.status if error is None else "failed").inc()
        await self._record(delivery, attempt, gone=status == 410)

    async def _drop(self, delivery: Delivery, now: float) -> None:
        """Retire a superseded progress event without sending it."""
        delivery.status, delivery.dead_at, delivery.next_attempt_at = "dead", now, None
        delivery.last_error = SUPERSEDED
        await self._record(delivery, Attempt(delivery.id, now, None, None, SUPERSEDED), gone=False)

    async def _record(self, delivery: Delivery, attempt: Attempt, *, gone: bool) -> None:
        try:
            await self._storage.record_attempt(delivery, attempt, gone=gone)
        except RelayError as exc:  # the lease brings it back; at-least-once
            log.warning("could not record delivery %s: %s", delivery.id, exc.message)

    def _advance(
        self, delivery: Delivery, attempt: Attempt, *, refused: bool, retry_after: float | None
    ) -> None:
        delivery.attempts += 1
        delivery.last_error = attempt.error
        now = attempt.attempted_at
        if attempt.error is None:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
                "delivered",
                now,
                None,
            )
            return
        schedule = self._policy.schedule
        if refused or attempt.status_code == 410 or delivery.attempts >= len(schedule):
            delivery.status, delivery.dead_at, delivery.next_attempt_at = "dead", now, None
            log.warning("delivery %s is dead: %s", delivery.id, attempt.error)
            return
        delay = schedule[delivery.attempts] * self._rng.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._policy.retry_after_max))
        delivery.next_attempt_at = now + delay


def parse_schedule(spec: str) -> Sequence[float]:
    """`DELIVERY_SCHEDULE` ("0,5,300,...") as seconds."""
    return tuple(float(part) for part in spec.split(",") if part.strip())
