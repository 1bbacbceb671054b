"""The application factory: the one place configuration turns into a running app.

uvicorn --factory service.app:create_app
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware

from service.api import dashboard
from service.api.context import Services, State
from service.api.errors import exception_handlers
from service.api.observability import RequestContext
from service.api.routes import (
    deliveries,
    docs,
    files,
    grsai_compat,
    health,
    live,
    results,
    tasks,
    webhooks,
)
from service.api.routes import metrics as metrics_routes
from service.assembly import Lasting, Seams, outbox_workers, poll_policy, stream_job
from service.clock import SystemClock
from service.domain.credentials import SystemEntropy
from service.files.store import open_asset_store
from service.jobs.ingest import CallbackIngestor
from service.jobs.poller import Poller
from service.jobs.ratelimit import SubmitLimiter
from service.jobs.reach import CallbackHealth, PublicWatch
from service.jobs.submission import Submitter
from service.jobs.watch import StreamSlots, TaskWatch
from service.metrics import Metrics
from service.settings import Settings
from service.storage import open_storage
from service.tunnel.public import PublicAddress
from service.upstream.clients import Transports, build_clients
from service.upstream.grsai import GrsaiClient

__all__ = ["Seams", "create_app", "running", "stop_streams"]  # Seams: the factory takes them


@contextlib.asynccontextmanager
async def running(app: Lasting, *, run_workers: bool = True) -> AsyncIterator[Services]:
    """One run of the app: build the HTTP clients, open the storage, start the workers; on the
    way out stop the workers, close the clients, then the storage. Every run builds its own,
    so the app can be started again after it stopped."""
    settings, metrics = app.settings, app.metrics
    kicks: dict[str, Callable[[], None]] = {}  # queue -> its worker's kick, once it exists

    def work_queued(queue: str) -> None:  # another replica (or this one) queued work
        kick = kicks.get(queue)
        if kick is not None:
            kick()

    app.watch.open()
    options = settings.storage_options(
        on_commit=metrics.time_commit, on_work=work_queued, on_task_change=app.watch.changed
    )
    storage = app.seams.storage or open_storage(settings.database_url, options)
    seams = app.seams
    clients = build_clients(
        settings,
        Transports(seams.upstream_transport, seams.download_transport, seams.delivery_transport),
        metrics.pool_wait_observer,
    )
    try:
        await storage.open()
    except BaseException:
        await clients.aclose()
        raise
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(storage.close)
        stack.callback(app.watch.close)  # e.g. when the app stops under a test's own lifespan
        stack.push_async_callback(clients.aclose)
        # ASSET_STORE: the folder ASSET_DIR, or an S3 bucket (its client made here, no request)
        assets = open_asset_store(settings.asset_store, settings.asset_dir)
        await assets.open()
        stack.push_async_callback(assets.close)
        metrics.watch(storage.queue_stats, storage.status_counts, app.clock.now)
        metrics.watch_pools(lambda: [client.stats() for client in clients])
        metrics.live_waiters.set_function(lambda: app.watch.watchers)
        assert settings.grsai_api_key is not None  # create_app refuses to start without one
        upstream = GrsaiClient(
            clients.grsai,
            settings.grsai_base_url,
            settings.grsai_api_key,
            connect_retries=settings.upstream_connect_retries,
            retry_delay=settings.upstream_retry_delay,
            rng=app.rng,
            metrics=metrics,
        )
        copier, deliverer = outbox_workers(app, storage, clients, assets)
        kicks.update(copier=copier.kick, deliverer=deliverer.kick)
        policy = poll_policy(settings)

        def finished() -> None:  # a task became final (copies, callback due) or has a progress post
            copier.kick()
            deliverer.kick()

        callbacks = CallbackHealth(app.clock)
        poller = Poller(
            storage,
            upstream,
            policy,
            app.clock,
            tick=settings.poller_tick,
            batch=settings.poller_batch,
            concurrency=settings.poller_concurrency,
            lease=settings.poller_lease,
            rng=app.rng,
            copy_results=settings.mirror_results,
            on_final=finished,
            on_silent=callbacks.silent,
        )
        public_watch = PublicWatch(
            app.public,
            storage,
            app.clock,
            app.entropy,
            on_switched=poller.kick,
            check=settings.public_url_check,
        )
        # downloads a replica sharing ASSET_DIR still writes are touched within the stall timeout
        assets.clear_staging(older_than=settings.asset_stall_timeout * 2)
        stop_grace = min(5.0, settings.shutdown_timeout)
        for worker in (deliverer, copier, poller):  # the poller stops first
            stack.push_async_callback(worker.stop, stop_grace)
        stack.push_async_callback(public_watch.stop)
        public_watch.start(check_first=run_workers)
        streams = stream_job(app, storage, stack, policy, on_final=finished, poller=poller)
        if run_workers:
            poller.start()
            if settings.mirror_results:
                copier.start()
            deliverer.start()
        limiter = SubmitLimiter(
            app.clock,
            settings.submit_rate_per_minute,
            settings.submit_max_in_flight,
            settings.submit_queue_wait,
            storage,
        )

        yield Services(
            settings=settings,
            storage=storage,
            clients=clients,
            upstream=upstream,
            submitter=Submitter(
                storage,
                upstream,
                settings.catalog(),
                policy,
                app.clock,
                app.entropy,
                public_url=lambda: app.public.url,
                metadata_limit=settings.metadata_max_bytes,
                callback_guard=deliverer.guard,
                limiter=limiter,
                task_mode=settings.task_mode,
                streams=streams,
            ),
            ingestor=CallbackIngestor(
                storage,
                upstream,
                policy,
                app.clock,
                verify=settings.verify_callbacks,
                verify_timeout=settings.upstream_verify_timeout,
                copy_results=settings.mirror_results,
                on_final=finished,
                on_heard=callbacks.heard,
            ),
            poller=poller,
            assets=assets,
            copier=copier,
            deliverer=deliverer,
            metrics=metrics,
            limiter=limiter,
            clock=app.clock,
            entropy=app.entropy,
            watch=app.watch,
            public=app.public,
            public_check=public_watch,
            callback_health=callbacks,
            streams=StreamSlots(settings.streams_per_key),
            demo_mode=app.demo_mode,
        )


def create_app(
    settings: Settings | None = None,
    *,
    seams: Seams | None = None,
    run_workers: bool = True,
    demo_mode: bool = False,
    public: PublicAddress | None = None,
) -> Starlette:
    """Build the grsai-relay ASGI app. Reads the environment only when `settings` is None.

    Nothing is opened here: each run of the app's lifespan builds, opens and closes its own
    clients, storage and workers, and yields them as the typed state routes read (`State`).
    `demo_mode` is set by `grsai-relay serve` when it runs against its own simulator: only
    then are keys made by demo mode accepted. `public` is the tunnel's address when
    `serve --tunnel` runs one (default: PUBLIC_BASE_URL, fixed).
    """
    settings = settings or Settings()
    if settings.grsai_api_key is None:
        raise ValueError("GRSAI_API_KEY is not set (run `grsai-relay serve` for demo mode)")
    seams = seams or Seams()
    lasting = Lasting(
        settings,
        seams,
        Metrics(),
        seams.clock or SystemClock(),
        seams.entropy or SystemEntropy(),
        seams.rng or random.Random(),
        demo_mode,
        TaskWatch(),
        public or PublicAddress(settings.public_base_url),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        async with running(lasting, run_workers=run_workers) as services:
            yield {"services": services}

    app = Starlette(
        routes=[  # matched in order: the busiest first
            *webhooks.routes,
            *tasks.routes,
            *health.routes,
            *results.routes,
            *grsai_compat.routes,
            *files.routes,
            *live.routes,
            *deliveries.routes,
            *metrics_routes.routes,
            *docs.routes,
            *dashboard.routes(),
        ],
        middleware=[
            Middleware(
                RequestContext,
                metrics=lasting.metrics,
                id_prefix=hashlib.sha256(lasting.entropy.token(16).encode()).hexdigest()[:16],
            )
        ],
        lifespan=lifespan,
        exception_handlers=exception_handlers(),
    )
    # A trailing-slash redirect would build its Location from the Host header: answer 404.
    app.router.redirect_slashes = False
    app.state.watch = lasting.watch  # for `stop_streams`
    return app


def stop_streams(app: Starlette) -> None:
    """The server is stopping: end open event streams and long-polls now (a long-poll answers
    with the task as it is), so that draining the connections does not wait for them."""
    watch = getattr(app.state, "watch", None)
    if isinstance(watch, TaskWatch):
        watch.close()
