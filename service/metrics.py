"""Prometheus metrics, in a registry owned by the app (no import-time globals)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

QueueProbe = Callable[[float], Awaitable[dict[str, tuple[int, float]]]]
StatusProbe = Callable[[], Awaitable[dict[str, int]]]


class PoolStats(Protocol):
    """What one outbound client's pool reports (`service.upstream.httppool.PoolStats`)."""

    @property
    def name(self) -> str: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def rebuilds(self) -> int: ...
    @property
    def saturated(self) -> int: ...
    @property
    def jammed(self) -> int: ...


PoolProbe = Callable[[], Iterable[PoolStats]]


class Metrics:
    """Every metric grsai-relay exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._database: _DatabaseCollector | None = None
        self._pools: _PoolCollector | None = None
        self._callback_counts: dict[str, Any] = {}  # outcome -> its labelled child
        r = self.registry
        self.requests = Counter(
            "grsai_relay_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "grsai_relay_http_request_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=_LATENCY,
            registry=r,
        )
        self.callbacks = Counter(
            "grsai_relay_callbacks", "GrsAI callbacks by outcome", ["outcome"], registry=r
        )
        self.upstream_seconds = Histogram(
            "grsai_relay_upstream_seconds",
            "Latency of calls to GrsAI",
            ["operation"],
            buckets=_LATENCY,
            registry=r,
        )
        self.upstream_errors = Counter(
            "grsai_relay_upstream_errors",
            "Failed calls to GrsAI by kind",
            ["operation", "kind"],
            registry=r,
        )
        self.asset_bytes = Counter(
            "grsai_relay_asset_download_bytes", "Bytes of result files stored", registry=r
        )
        self.asset_outcomes = Counter(
            "grsai_relay_asset_downloads", "Result file copies by outcome", ["outcome"], registry=r
        )
        self.deliveries = Counter(
            "grsai_relay_deliveries", "Client callback attempts by outcome", ["outcome"], registry=r
        )
        self.db_write_seconds = Histogram(
            "grsai_relay_db_commit_seconds",
            "Duration of one group commit",
            buckets=_LATENCY,
            registry=r,
        )
        self.db_batch = Histogram(
            "grsai_relay_db_commit_batch",
            "Writes per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.rate_limited = Counter(
            "grsai_relay_rate_limited", "Submissions refused by the rate limit", registry=r
        )
        self.live_waiters = Gauge(
            "grsai_relay_live_waiters",
            "Task event streams and long-polls open now, waiting for a change",
            registry=r,
        )
        self.upstream_streams = Gauge(
            "grsai_relay_upstream_streams",
            "GrsAI streams open now (stream mode: one per task)",
            registry=r,
        )
        self.workers_alive = Gauge(
            "grsai_relay_worker_alive", "1 while a background worker runs", ["worker"], registry=r
        )
        self.pool_wait = Histogram(
            "grsai_relay_http_pool_wait_seconds",
            "Time an outbound request waited for a free connection",
            ["client"],
            buckets=_LATENCY,
            registry=r,
        )

    def pool_wait_observer(self, client: str) -> Callable[[float], None]:
        """Where the outbound client `client` records how long each request waited."""
        return self.pool_wait.labels(client).observe

    def watch_pools(self, pools: PoolProbe) -> None:
        """Read the outbound clients' pool use and watchdog counts from `pools` at scrape time
        (each run of the app has its own clients: a later call replaces the probe)."""
        if self._pools is None:
            self._pools = _PoolCollector(pools)
            self.registry.register(self._pools)
        self._pools.probe = pools

    def watch(self, queues: QueueProbe, statuses: StatusProbe, now: Callable[[], float]) -> None:
        """Read gauges from the database at scrape time (queue depth and age, task counts); a
        later call (the app's next run, its own storage) replaces the probes."""
        if self._database is None:
            self._database = _DatabaseCollector(queues, statuses, now)
            self.registry.register(self._database)
        self._database.probes = (queues, statuses, now)

    async def refresh(self) -> None:
        """Run the scrape-time database queries (before rendering /metrics)."""
        if self._database is not None:
            await self._database.refresh()

    def count_callback(self, outcome: str) -> None:
        """Count one GrsAI callback (the labelled child is looked up once per outcome)."""
        child = self._callback_counts.get(outcome)
        if child is None:
            child = self._callback_counts[outcome] = self.callbacks.labels(outcome)
        child.inc()

    def time_commit(self, started: float, batch: int) -> None:
        """Record one group commit."""
        self.db_write_seconds.observe(time.perf_counter() - started)
        self.db_batch.observe(batch)


class _DatabaseCollector(Collector):
    """Gauges computed by queries when Prometheus scrapes (cached for the scrape only)."""

    def __init__(self, queues: QueueProbe, statuses: StatusProbe, now: Callable[[], float]) -> None:
        self.probes = (queues, statuses, now)
        self.snapshot: tuple[dict[str, tuple[int, float]], dict[str, int]] = ({}, {})

    async def refresh(self) -> None:
        """Query the database (called by the /metrics route before rendering)."""
        queues, statuses, now = self.probes
        self.snapshot = (await queues(now()), await statuses())

    def collect(self) -> Iterator[Any]:
        """Yield the gauges from the last refresh."""
        queues, statuses = self.snapshot
        depth = GaugeMetricFamily("grsai_relay_queue_due", "Jobs due now", labels=["queue"])
        age = GaugeMetricFamily(
            "grsai_relay_queue_oldest_seconds", "Age of the oldest due job", labels=["queue"]
        )
        for name, (count, oldest) in sorted(queues.items()):
            depth.add_metric([name], count)
            age.add_metric([name], oldest)
        tasks = GaugeMetricFamily("grsai_relay_tasks", "Tasks by status", labels=["status"])
        for status, count in sorted(statuses.items()):
            tasks.add_metric([status], count)
        yield depth
        yield age
        yield tasks


class _PoolCollector(Collector):
    """Pool use (in flight, capacity) and watchdog counts of each outbound HTTP client."""

    def __init__(self, pools: PoolProbe) -> None:
        self.probe = pools

    def collect(self) -> Iterator[Any]:
        """Yield one sample per client of each family."""
        families = (
            (
                "in_flight",
                GaugeMetricFamily,
                "grsai_relay_http_pool_in_flight",
                "Outbound requests holding a connection slot",
            ),
            (
                "capacity",
                GaugeMetricFamily,
                "grsai_relay_http_pool_capacity",
                "Connection slots of the pool",
            ),
            (
                "rebuilds",
                CounterMetricFamily,
                "grsai_relay_http_pool_rebuilds",
                "Times the watchdog replaced a jammed pool",
            ),
            (
                "saturated",
                CounterMetricFamily,
                "grsai_relay_http_pool_saturated",
                "Requests refused because every connection stayed busy with our own requests",
            ),
            (
                "jammed",
                CounterMetricFamily,
                "grsai_relay_http_pool_jammed",
                "Requests whose pool timed out although it had slots held by no request",
            ),
        )
        stats = list(self.probe())
        for field, kind, name, doc in families:
            family = kind(name, doc, labels=["client"])
            for pool in stats:
                family.add_metric([pool.name], getattr(pool, field))
            yield family
