"""The application factory: the one place configuration turns into a running app.

uvicorn --factory service.app:create_app
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware

from service.api.context import Services
from service.api.errors import exception_handlers
from service.api.observability import RequestContext
from service.api.routes import deliveries, docs, health, results, tasks, webhooks
from service.api.routes import metrics as metrics_routes
from service.clock import Clock, SystemClock
from service.domain.credentials import Entropy, SystemEntropy
from service.domain.schedule import PollPolicy
from service.files.download import Downloader
from service.files.store import LocalAssetStore
from service.jobs.copier import Copier
from service.jobs.delivery import Deliverer, DeliveryPolicy, parse_schedule
from service.jobs.ingest import CallbackIngestor
from service.jobs.poller import Poller
from service.jobs.ratelimit import SubmitLimiter
from service.jobs.submission import Submitter
from service.metrics import Metrics
from service.settings import Settings
from service.storage import Storage, open_storage
from service.upstream.clients import Transports, build_clients
from service.upstream.grsai import GrsaiClient
from service.upstream.netguard import Resolver, UrlGuard, parse_networks, system_resolver


@dataclass(frozen=True, slots=True)
class Seams:
    """What tests may replace: every source of I/O, time and chance the app uses.

    `upstream_transport` answers GrsAI calls, and downloads and deliveries too unless they get
    their own transport.
    """

    storage: Storage | None = None
    upstream_transport: httpx.AsyncBaseTransport | None = None
    download_transport: httpx.AsyncBaseTransport | None = None
    delivery_transport: httpx.AsyncBaseTransport | None = None
    clock: Clock | None = None
    entropy: Entropy | None = None
    rng: random.Random | None = None
    resolver: Resolver | None = None


def poll_policy(settings: Settings) -> PollPolicy:
    """The poller's timing rules from settings."""
    return PollPolicy(
        first_delay=settings.poll_first_delay,
        max_interval=settings.poll_max_interval,
        backoff=settings.poll_backoff,
        silence=settings.callback_silence,
        not_found_grace=settings.not_found_grace,
        submit_recovery_grace=settings.submit_recovery_grace,
        max_age=settings.task_max_age,
    )


def build_services(
    settings: Settings, seams: Seams | None = None, *, demo_mode: bool = False
) -> Services:
    """Wire every long-lived object from settings and the injected seams."""
    if settings.grsai_api_key is None:
        raise ValueError("GRSAI_API_KEY is not set (run `grsai-relay serve` for demo mode)")
    seams = seams or Seams()
    storage = seams.storage or open_storage(settings)
    clock = seams.clock or SystemClock()
    rng = seams.rng or random.Random()
    entropy = seams.entropy or SystemEntropy()
    policy = poll_policy(settings)
    metrics = Metrics()
    storage.observe_commits(metrics.time_commit)
    metrics.watch(storage.queue_stats, storage.status_counts, clock.now)
    clients = build_clients(
        settings,
        Transports(seams.upstream_transport, seams.download_transport, seams.delivery_transport),
        metrics.pool_wait_observer,
    )
    metrics.watch_pools(lambda: [client.stats() for client in clients])
    upstream = GrsaiClient(
        clients.grsai,
        settings.grsai_base_url,
        settings.grsai_api_key,
        connect_retries=settings.upstream_connect_retries,
        retry_delay=settings.upstream_retry_delay,
        rng=rng,
        metrics=metrics,
    )
    assets = LocalAssetStore(settings.asset_dir)
    resolver = seams.resolver or system_resolver
    guard = UrlGuard(parse_networks(settings.fetch_allow_networks), resolver)
    downloader = Downloader(
        clients.downloads,
        assets,
        guard,
        max_bytes=settings.asset_max_bytes,
        timeout=settings.asset_timeout,
    )
    copier = Copier(
        storage,
        downloader,
        clock,
        concurrency=settings.asset_concurrency,
        tick=settings.asset_tick,
        retry_delays=settings.retry_delays(),
        lease=settings.asset_timeout + settings.asset_stall_timeout + 60.0,
        rng=rng,
        on_settled=lambda: deliverer.kick(),
        metrics=metrics,
    )
    deliverer = Deliverer(
        storage,
        clients.deliveries,
        UrlGuard(parse_networks(settings.delivery_allow_networks), resolver),
        clock,
        DeliveryPolicy(
            schedule=tuple(parse_schedule(settings.delivery_schedule)),
            timeout=settings.delivery_timeout,
            retry_after_max=settings.delivery_retry_after_max,
            concurrency=settings.delivery_concurrency,
            per_host=settings.delivery_per_host,
        ),
        base_url=settings.public_base_url or "",
        tick=settings.delivery_tick,
        rng=rng,
        metrics=metrics,
    )
    copy = settings.mirror_results
    limiter = SubmitLimiter(
        clock,
        settings.submit_rate_per_minute,
        settings.submit_max_in_flight,
        settings.submit_queue_wait,
    )

    def finished() -> None:
        copier.kick()
        deliverer.kick()

    return Services(
        settings=settings,
        storage=storage,
        clients=clients,
        upstream=upstream,
        submitter=Submitter(
            storage,
            upstream,
            settings.catalog(),
            policy,
            clock,
            entropy,
            public_base_url=settings.public_base_url,
            metadata_limit=settings.metadata_max_bytes,
            callback_guard=deliverer.guard,
            limiter=limiter,
        ),
        ingestor=CallbackIngestor(
            storage,
            upstream,
            policy,
            clock,
            verify=settings.verify_callbacks,
            verify_timeout=settings.upstream_verify_timeout,
            copy_results=copy,
            on_final=finished,
        ),
        poller=Poller(
            storage,
            upstream,
            policy,
            clock,
            tick=settings.poller_tick,
            batch=settings.poller_batch,
            concurrency=settings.poller_concurrency,
            lease=settings.poller_lease,
            rng=rng,
            copy_results=copy,
            on_final=finished,
        ),
        assets=assets,
        copier=copier,
        deliverer=deliverer,
        metrics=metrics,
        limiter=limiter,
        clock=clock,
        entropy=entropy,
        demo_mode=demo_mode,
    )


def create_app(
    settings: Settings | None = None,
    *,
    seams: Seams | None = None,
    run_workers: bool = True,
    demo_mode: bool = False,
) -> Starlette:
    """Build the grsai-relay ASGI app. Reads the environment only when `settings` is None.

    `demo_mode` is set by `grsai-relay serve` when it runs against its own simulator: only
    then are keys made by demo mode accepted.
    """
    settings = settings or Settings()
    svc = build_services(settings, seams, demo_mode=demo_mode)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await svc.storage.open()
        svc.assets.clear_staging()
        try:
            if run_workers:
                svc.poller.start()
                if settings.mirror_results:
                    svc.copier.start()
                svc.deliverer.start()
            yield
        finally:
            grace = min(5.0, settings.shutdown_timeout)
            await svc.poller.stop(grace=grace)
            await svc.copier.stop(grace=grace)
            await svc.deliverer.stop(grace=grace)
            await svc.clients.aclose()
            await svc.storage.close()

    app = Starlette(
        routes=[  # matched in order: the busiest first
            *webhooks.routes,
            *tasks.routes,
            *health.routes,
            *results.routes,
            *deliveries.routes,
            *metrics_routes.routes,
            *docs.routes,
        ],
        middleware=[
            Middleware(
                RequestContext,
                metrics=svc.metrics,
                id_prefix=hashlib.sha256(svc.entropy.token(16).encode()).hexdigest()[:16],
            )
        ],
        lifespan=lifespan,
        exception_handlers=exception_handlers(),
    )
    # A trailing-slash redirect would build its Location from the Host header: answer 404.
    app.router.redirect_slashes = False
    app.state.services = svc
    return app
