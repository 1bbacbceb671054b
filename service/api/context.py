"""What one run of the app holds, as the routes see it, handed to them through the lifespan state.

Each field is typed by the few operations the routes use (Protocols), not by the class that
provides them: the app's wiring (`service.app`) chooses those, and tests may stand in for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, cast

from starlette.requests import Request
from starlette.types import Scope

from service.clock import Clock
from service.domain.credentials import Entropy
from service.domain.records import ApiKey, TaskRef
from service.files.store import AssetStore
from service.jobs.submission import Accepted
from service.jobs.watch import StreamSlots, TaskWatch
from service.metrics import Metrics
from service.settings import Settings
from service.storage import Storage
from service.tunnel.public import PublicAddress


class Worker(Protocol):
    """A background worker: readiness asks whether it runs; news may wake it early."""

    @property
    def alive(self) -> bool:
        """True while its loop runs."""
        ...

    def kick(self) -> None:
        """Look for due work now instead of at the next tick."""
        ...


class Submissions(Protocol):
    """Creating tasks (validation, idempotency, the submit to GrsAI)."""

    async def submit(
        self,
        key: ApiKey,
        body: dict[str, Any],
        idempotency_key: str | None,
        *,
        callback_format: str = "relay",
    ) -> Accepted:
        """Create and submit a task, or replay the one this Idempotency-Key already made;
        `callback_format` ("relay" | "grsai") shapes the callbacks to its `callback_url`."""
        ...


class Callbacks(Protocol):
    """Receiving GrsAI's callbacks."""

    async def find_task(self, token: str) -> TaskRef:
        """The task a callback token belongs to (404 otherwise)."""
        ...

    async def receive(self, task: TaskRef, raw: bytes) -> str:
        """Store and apply one callback body; return its outcome."""
        ...


class Reachability(Protocol):
    """Whether GrsAI answers (an optional readiness check)."""

    async def reachable(self, now: float, ttl: float = 30.0) -> dict[str, str]:
        """A readiness check result, cached for `ttl` seconds."""
        ...


class OutboundPool(Protocol):
    """An outbound HTTP client's pool, as readiness reports it."""

    @property
    def name(self) -> str:
        """Its purpose (grsai, downloads, deliveries)."""
        ...

    def health(self) -> dict[str, str]:
        """Failing while no request can get a connection."""
        ...


class Reporter(Protocol):
    """A readiness check that reports itself (`/readyz`)."""

    def report(self) -> dict[str, str]:
        """The check's state: `status` (ok, warning or failing) and what explains it."""
        ...


class Limiter(Protocol):
    """The per-key submission rate limit."""

    async def take(self, key_id: str) -> None:
        """Spend one submission of `key_id` or raise `RateLimited`."""
        ...


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request handler may need, for one run of the app."""

    settings: Settings
    storage: Storage
    clients: Iterable[OutboundPool]
    upstream: Reachability
    submitter: Submissions
    ingestor: Callbacks
    poller: Worker
    copier: Worker
    deliverer: Worker
    assets: AssetStore
    metrics: Metrics
    limiter: Limiter
    clock: Clock
    entropy: Entropy
    watch: TaskWatch  # live status: waiters woken when a task changes
    streams: StreamSlots  # live status: open event streams per API key
    public: PublicAddress  # where GrsAI's callbacks reach us now (a tunnel may move it)
    public_check: Reporter  # the public URL's self-check
    callback_health: Reporter  # callbacks that stopped arriving
    demo_mode: bool = False  # serving demo mode's simulator: demo keys are accepted


class State(TypedDict):
    """What the app's lifespan yields; the server copies it into every request's scope."""

    services: Services


def services(request: Request) -> Services:
    """The services of the app's current run (built by its lifespan)."""
    return scope_services(request.scope)


def scope_services(scope: Scope) -> Services:
    """`services` for plain ASGI code, which has a scope but no Request."""
    return cast(State, scope["state"])["services"]
