"""The parts the application factory assembles: what tests may replace (`Seams`), what lasts as
long as the app (`Lasting`), and the background workers built from settings."""

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from service.clock import Clock
from service.domain.credentials import Entropy
from service.domain.schedule import PollPolicy
from service.files.download import Downloader
from service.files.store import AssetStore
from service.jobs.copier import Copier
from service.jobs.delivery import Deliverer, DeliveryPolicy, parse_schedule
from service.jobs.poller import Poller
from service.jobs.streams import StreamJob
from service.jobs.watch import TaskWatch
from service.metrics import Metrics
from service.settings import Settings
from service.storage import Storage
from service.tunnel.public import PublicAddress
from service.upstream.clients import HttpClients, stream_client
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


@dataclass(frozen=True, slots=True)
class Lasting:
    """What lives as long as the app itself (not one run of it): no resource to close."""

    settings: Settings
    seams: Seams
    metrics: Metrics
    clock: Clock
    entropy: Entropy
    rng: random.Random
    demo_mode: bool
    watch: TaskWatch  # live status; `stop_streams` closes it when the server starts stopping
    public: PublicAddress  # PUBLIC_BASE_URL, or a tunnel's URL as it changes


def outbox_workers(
    app: Lasting, storage: Storage, clients: HttpClients, assets: AssetStore
) -> tuple[Copier, Deliverer]:
    """The copier (with the file store it fills) and the deliverer."""
    settings, resolver = app.settings, app.seams.resolver or system_resolver
    downloader = Downloader(
        clients.downloads,
        assets,
        UrlGuard(parse_networks(settings.fetch_allow_networks), resolver),
        max_bytes=settings.asset_max_bytes,
        timeout=settings.asset_timeout,
    )
    deliverer = Deliverer(
        storage,
        clients.deliveries,
        UrlGuard(parse_networks(settings.delivery_allow_networks), resolver),
        app.clock,
        DeliveryPolicy(
            schedule=tuple(parse_schedule(settings.delivery_schedule)),
            timeout=settings.delivery_timeout,
            retry_after_max=settings.delivery_retry_after_max,
            concurrency=settings.delivery_concurrency,
            per_host=settings.delivery_per_host,
            link_ttl=settings.result_link_seconds,
        ),
        base_url=lambda: app.public.base,
        tick=settings.delivery_tick,
        rng=app.rng,
        metrics=app.metrics,
    )
    copier = Copier(
        storage,
        downloader,
        app.clock,
        concurrency=settings.asset_concurrency,
        tick=settings.asset_tick,
        retry_delays=settings.retry_delays(),
        lease=settings.asset_timeout + settings.asset_stall_timeout + 60.0,
        rng=app.rng,
        on_settled=deliverer.kick,
        metrics=app.metrics,
    )
    return copier, deliverer


def stream_job(
    app: Lasting,
    storage: Storage,
    stack: contextlib.AsyncExitStack,
    policy: PollPolicy,
    *,
    on_final: Callable[[], None],
    poller: Poller,
) -> StreamJob:
    """Stream mode's job on its own GrsAI pool; on the way out its streams close first (each
    handing its task to the poller), then the pool."""
    settings, metrics = app.settings, app.metrics
    http = stream_client(
        settings, settings.stream_max, app.seams.upstream_transport, metrics.pool_wait_observer
    )
    stack.push_async_callback(http.aclose)
    assert settings.grsai_api_key is not None  # create_app refuses to start without one
    streams = StreamJob(
        storage,
        GrsaiClient(http, settings.grsai_base_url, settings.grsai_api_key, metrics=metrics),
        policy,
        app.clock,
        limit=settings.stream_max,
        first_frame_timeout=settings.upstream_timeout,
        copy_results=settings.mirror_results,
        on_final=on_final,
        on_fallback=poller.kick,
    )
    stack.push_async_callback(streams.stop, min(5.0, settings.shutdown_timeout))
    metrics.upstream_streams.set_function(lambda: streams.open)
    return streams
