"""Shared fixtures for the core unit tests: a relay app driven in-process against a fake GrsAI.

The relay is built with `create_app` from explicit `Settings`, a `ManualClock`, a deterministic
`Entropy` and an `httpx.MockTransport` standing in for GrsAI; its storage is a real SQLite file
under `tmp_path`. Tests talk to it through `httpx.ASGITransport`, so no server is started.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp

from service.api.context import Services, State
from service.app import Seams, create_app
from service.domain.credentials import hash_secret, new_api_key
from service.domain.records import ApiKey, Task
from service.files.store import LocalAssetStore
from service.jobs.copier import Copier
from service.jobs.ingest import CallbackIngestor
from service.jobs.poller import Poller
from service.settings import Settings
from service.storage import Storage
from service.upstream.grsai import GrsaiClient
from tests.doubles import ManualClock, serving

JSON = dict[str, Any]
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]
RELAY_URL = "http://relay.test"
GRSAI_URL = "http://grsai.test"
POLL_PATH = "/v1/draw/result"


class FakeEntropy:
    """Deterministic randomness with the exact shape of `secrets.token_urlsafe`."""

    def __init__(self) -> None:
        self.calls = 0

    def token(self, nbytes: int) -> str:
        """Return `nbytes` pseudo-random bytes (derived from a counter) as unpadded base64url."""
        self.calls += 1
        raw = hashlib.shake_256(f"entropy-{self.calls}".encode()).digest(nbytes)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def task_object(
    upstream_id: str,
    status: str = "running",
    progress: int | None = 0,
    urls: Iterable[str] = (),
    **extra: Any,
) -> JSON:
    """A flat GrsAI task object, as a callback body or the `data` of a poll answer."""
    found = [{"url": url, "content": ""} for url in urls]
    body: JSON = {
        "id": upstream_id,
        "status": status,
        "progress": progress,
        "results": found or None,
        "failure_reason": "",
        "error": "",
    }
    return {**body, **extra}


def wrapped(data: Any, code: int = 0, msg: str = "success") -> JSON:
    """GrsAI's `{code, msg, data}` envelope."""
    return {"code": code, "msg": msg, "data": data}


@dataclass
class FakeGrsai:
    """GrsAI behind `httpx.MockTransport`: records every call, answers from `tasks`.

    Submits answer `{"code":0,"data":{"id":...}}` and create a running task in `tasks`;
    polls answer that task wrapped, or code -22 when the id is not in `tasks`. Set
    `on_submit` / `on_poll` to script any other answer (or raise an `httpx` error).
    """

    tasks: dict[str, JSON] = field(default_factory=dict)
    submit_paths: list[str] = field(default_factory=list)
    submit_bodies: list[JSON] = field(default_factory=list)
    submit_headers: list[httpx.Headers] = field(default_factory=list)
    poll_ids: list[str] = field(default_factory=list)
    on_submit: Handler | None = None
    on_poll: Handler | None = None
    issued: list[str] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        """The transport to hand to `create_app(upstream_transport=...)`."""
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request from the relay."""
        body = json.loads(request.content)
        if request.url.path == POLL_PATH:
            self.poll_ids.append(body["id"])
            if self.on_poll is not None:
                return await self.on_poll(request)
            found = self.tasks.get(body["id"])
            if found is None:
                return httpx.Response(200, json=wrapped(None, -22, "task not found"))
            return httpx.Response(200, json=wrapped(found))
        self.submit_paths.append(request.url.path)
        self.submit_bodies.append(body)
        self.submit_headers.append(request.headers)
        if self.on_submit is not None:
            return await self.on_submit(request)
        upstream_id = f"16-{len(self.issued) + 1:08x}-9692-455d-89a9-be79f437c549"
        self.issued.append(upstream_id)
        self.tasks[upstream_id] = task_object(upstream_id)
        return httpx.Response(200, json=wrapped({"id": upstream_id}))

    @property
    def submits(self) -> int:
        """How many submit calls arrived."""
        return len(self.submit_bodies)

    def web_hook(self, n: int = -1) -> str:
        """The `webHook` value of the n-th submit."""
        value = self.submit_bodies[n]["webHook"]
        assert isinstance(value, str)
        return value

    def token(self, n: int = -1) -> str:
        """The callback token inside the n-th submit's `webHook` URL."""
        return self.web_hook(n).rsplit("/", 1)[1]

    def succeed(self, upstream_id: str, *urls: str) -> JSON:
        """Mark a task succeeded upstream with these result URLs; return its object."""
        self.tasks[upstream_id] = task_object(upstream_id, "succeeded", 100, urls)
        return self.tasks[upstream_id]


def relay_settings(tmp_path: Path, name: str = "t.db", **changes: Any) -> Settings:
    """Settings for a test relay on a SQLite file in `tmp_path` (callback mode by default)."""
    values: JSON = {
        "database_url": f"sqlite:///{tmp_path}/{name}",
        "grsai_api_key": "sk-test",
        "grsai_base_url": GRSAI_URL,
        "public_base_url": RELAY_URL,
        "asset_dir": str(tmp_path / "assets"),
        "submit_rate_per_minute": 0,  # rate limiting has its own tests
        "public_url_check": False,  # relay.test resolves nowhere; the probe has its own tests
        **changes,
    }
    return Settings(**values)


@dataclass
class Relay:
    """One relay app under test with its client, clock, fake GrsAI and a caller's API key."""

    app: Starlette
    client: httpx.AsyncClient
    clock: ManualClock
    grsai: FakeGrsai
    state: State
    key: str = ""
    key_id: str = ""

    @property
    def asgi(self) -> ASGIApp:
        """The app as a server runs it, with its lifespan's state (for another client)."""
        return serving(self.app, self.state)

    @property
    def services(self) -> Services:
        """The services of the app's running lifespan."""
        return self.state["services"]

    @property
    def storage(self) -> Storage:
        """The app's storage."""
        return self.services.storage

    @property
    def poller(self) -> Poller:
        """The app's poller (not started: tests call it directly)."""
        return cast(Poller, self.services.poller)

    @property
    def copier(self) -> Copier:
        """The app's copier."""
        return cast(Copier, self.services.copier)

    @property
    def assets(self) -> LocalAssetStore:
        """The app's file store."""
        return cast(LocalAssetStore, self.services.assets)

    @property
    def upstream(self) -> GrsaiClient:
        """The app's GrsAI client."""
        return cast(GrsaiClient, self.services.upstream)

    @property
    def ingestor(self) -> CallbackIngestor:
        """The app's callback ingestor."""
        return cast(CallbackIngestor, self.services.ingestor)

    def auth(self, key: str | None = None) -> dict[str, str]:
        """The Authorization header for `key` (default: this relay's caller)."""
        return {"Authorization": f"Bearer {key or self.key}"}

    async def new_key(self, name: str = "caller") -> tuple[str, str]:
        """Create an API key; return (secret, id)."""
        made = new_api_key(self.services.entropy)
        key = ApiKey(made.id, name, made.prefix, self.clock.now())
        await self.storage.create_api_key(key, hash_secret(made.secret))
        return made.secret, made.id

    async def submit(
        self,
        model: str = "nano-banana",
        prompt: str = "a red fox",
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> httpx.Response:
        """POST /v1/tasks with a JSON body."""
        headers = self.auth(key)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        body = {"model": model, "prompt": prompt, **fields}
        return await self.client.post("/v1/tasks", json=body, headers=headers)

    async def created(self, model: str = "nano-banana", **fields: Any) -> JSON:
        """Submit a task that must be accepted; return its JSON."""
        response = await self.submit(model, **fields)
        assert response.status_code == 202, response.text
        body: JSON = response.json()
        return body

    async def task(self, task_id: str) -> Task:
        """The stored task (it must exist)."""
        stored = await self.storage.task(task_id)
        assert stored is not None
        return stored

    async def callback(self, token: str, body: JSON | bytes) -> httpx.Response:
        """POST a GrsAI callback to `/webhooks/grsai/<token>`."""
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            f"/webhooks/grsai/{token}",
            content=content,
            headers={"Content-Type": "application/json"},
        )


MakeRelay = Callable[..., Awaitable[Relay]]


def lifespan(app: Starlette) -> contextlib.AbstractAsyncContextManager[State]:
    """The app's lifespan, typed as what it is: it yields the `State` the routes read."""
    return cast(contextlib.AbstractAsyncContextManager[State], app.router.lifespan_context(app))


async def started(
    stack: contextlib.AsyncExitStack, app: Starlette, clock: ManualClock, grsai: FakeGrsai
) -> Relay:
    """Run `app`'s lifespan (until `stack` closes) and a client to it, with a caller's key."""
    state = await stack.enter_async_context(lifespan(app))
    transport = httpx.ASGITransport(app=serving(app, state))
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=transport, base_url=RELAY_URL)
    )
    relay = Relay(app, client, clock, grsai, state)
    relay.key, relay.key_id = await relay.new_key()
    return relay


PUBLIC_IP = "93.184.216.34"  # what every test hostname resolves to: public, so URLs pass vetting


async def public_resolver(host: str, port: int) -> list[str]:
    """Resolve any test hostname to one public address (no DNS in unit tests)."""
    return [PUBLIC_IP]


@pytest.fixture(name="clock")
def _clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(name="grsai")
def _grsai() -> FakeGrsai:
    return FakeGrsai()


@pytest.fixture(name="make_relay")
async def _make_relay(
    tmp_path: Path, clock: ManualClock, grsai: FakeGrsai
) -> AsyncIterator[MakeRelay]:
    """Build relays on demand (keyword arguments change `Settings`); close them all at the end."""
    async with contextlib.AsyncExitStack() as stack:
        made = 0

        async def make(
            *, run_poller: bool = False, demo_mode: bool = False, **changes: Any
        ) -> Relay:
            nonlocal made
            made += 1
            settings = relay_settings(tmp_path, f"t{made}.db", **changes)
            seams = Seams(
                upstream_transport=grsai.transport(),
                clock=clock,
                entropy=FakeEntropy(),
                resolver=public_resolver,
            )
            app = create_app(settings, seams=seams, run_workers=run_poller, demo_mode=demo_mode)
            return await started(stack, app, clock, grsai)

        yield make


@pytest.fixture(name="relay")
async def _relay(make_relay: MakeRelay) -> Relay:
    """A relay in callback mode (public_base_url set), verifying terminal callbacks."""
    return await make_relay()


@pytest.fixture(name="poll_relay")
async def _poll_relay(make_relay: MakeRelay) -> Relay:
    """A relay in poll mode (no public_base_url)."""
    return await make_relay(public_base_url=None)
