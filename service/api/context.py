"""The long-lived objects one running app holds, handed to routes through the lifespan state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from starlette.requests import Request
from starlette.types import Scope

from service.clock import Clock
from service.domain.credentials import Entropy
from service.files.store import LocalAssetStore
from service.jobs.copier import Copier
from service.jobs.delivery import Deliverer
from service.jobs.ingest import CallbackIngestor
from service.jobs.poller import Poller
from service.jobs.ratelimit import SubmitLimiter
from service.jobs.submission import Submitter
from service.metrics import Metrics
from service.settings import Settings
from service.storage import Storage
from service.upstream.clients import HttpClients
from service.upstream.grsai import GrsaiClient


@dataclass(slots=True)
class Services:
    """Everything a request handler may need."""

    settings: Settings
    storage: Storage
    clients: HttpClients
    upstream: GrsaiClient
    submitter: Submitter
    ingestor: CallbackIngestor
    poller: Poller
    assets: LocalAssetStore
    copier: Copier
    deliverer: Deliverer
    metrics: Metrics
    limiter: SubmitLimiter
    clock: Clock
    entropy: Entropy
    demo_mode: bool = False  # serving demo mode's simulator: demo keys are accepted


def services(request: Request) -> Services:
    """The app's services (built by `create_app`, opened by its lifespan)."""
    return scope_services(request.scope)


def scope_services(scope: Scope) -> Services:
    """`services` for plain ASGI code, which has a scope but no Request."""
    return cast(Services, scope["app"].state.services)
