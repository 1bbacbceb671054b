"""The application factory: the one place configuration turns into a running app.

uvicorn --factory service.app:create_app
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette

from service.clock import Clock, SystemClock
from service.context import Services
from service.credentials import Entropy, SystemEntropy
from service.errors import exception_handlers
from service.ingest import CallbackIngestor
from service.poller import Poller
from service.routes import health, tasks, webhooks
from service.schedule import PollPolicy
from service.settings import Settings
from service.storage import Storage, open_storage
from service.submission import Submitter
from service.upstream import GrsaiClient


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


def upstream_http(
    settings: Settings, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """The one long-lived HTTP client for GrsAI, with explicit timeouts and limits."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(settings.upstream_timeout, connect=settings.upstream_connect_timeout),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        follow_redirects=False,
    )


def build_services(
    settings: Settings,
    *,
    storage: Storage | None = None,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    entropy: Entropy | None = None,
    rng: random.Random | None = None,
) -> Services:
    """Wire every long-lived object from settings and the injected seams."""
    if settings.grsai_api_key is None:
        raise ValueError("GRSAI_API_KEY is not set (run `grsai-relay serve` for demo mode)")
    storage = storage or open_storage(settings)
    clock = clock or SystemClock()
    entropy = entropy or SystemEntropy()
    policy = poll_policy(settings)
    http = upstream_http(settings, upstream_transport)
    rng = rng or random.Random()
    upstream = GrsaiClient(
        http,
        settings.grsai_base_url,
        settings.grsai_api_key,
        connect_retries=settings.upstream_connect_retries,
        retry_delay=settings.upstream_retry_delay,
        rng=rng,
    )
    return Services(
        settings=settings,
        storage=storage,
        http=http,
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
        ),
        ingestor=CallbackIngestor(
            storage,
            upstream,
            policy,
            clock,
            verify=settings.verify_callbacks,
            verify_timeout=settings.upstream_verify_timeout,
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
        ),
        clock=clock,
        entropy=entropy,
    )


def create_app(
    settings: Settings | None = None,
    *,
    storage: Storage | None = None,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    entropy: Entropy | None = None,
    rng: random.Random | None = None,
    run_poller: bool = True,
) -> Starlette:
    """Build the grsai-relay ASGI app. Reads the environment only when `settings` is None."""
    settings = settings or Settings()
    svc = build_services(
        settings,
        storage=storage,
        upstream_transport=upstream_transport,
        clock=clock,
        entropy=entropy,
        rng=rng,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await svc.storage.open()
        try:
            if run_poller:
                svc.poller.start()
            yield
        finally:
            await svc.poller.stop(grace=min(5.0, settings.shutdown_timeout))
            await svc.http.aclose()
            await svc.storage.close()

    app = Starlette(
        routes=[*health.routes, *tasks.routes, *webhooks.routes],
        lifespan=lifespan,
        exception_handlers=exception_handlers(),
    )
    app.state.services = svc
    return app
