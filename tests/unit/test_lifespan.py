"""The app's lifespan owns what a run holds: it builds the HTTP clients, the storage and the
workers, yields them as typed state, and closes them all; the app can then run again."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from service.api.context import State
from service.app import Seams, create_app
from service.domain.errors import StorageUnavailable
from service.jobs.poller import Poller
from service.upstream.clients import HttpClients
from tests.doubles import ManualClock, serving
from tests.unit.conftest import (
    RELAY_URL,
    FakeEntropy,
    FakeGrsai,
    Relay,
    lifespan,
    public_resolver,
    relay_settings,
)


def relay_app(tmp_path: Path, grsai: FakeGrsai, clock: ManualClock) -> Starlette:
    """A relay app with its workers running, against the fake GrsAI."""
    seams = Seams(
        upstream_transport=grsai.transport(),
        clock=clock,
        entropy=FakeEntropy(),
        resolver=public_resolver,
    )
    return create_app(relay_settings(tmp_path), seams=seams, run_workers=True)


@contextlib.asynccontextmanager
async def run(app: Starlette, grsai: FakeGrsai, clock: ManualClock) -> AsyncIterator[Relay]:
    """One run of `app`'s lifespan with a client and a caller's key."""
    async with lifespan(app) as state:
        transport = httpx.ASGITransport(app=serving(app, state))
        async with httpx.AsyncClient(transport=transport, base_url=RELAY_URL) as client:
            relay = Relay(app, client, clock, grsai, state)
            relay.key, relay.key_id = await relay.new_key()
            yield relay


async def test_nothing_is_opened_before_the_lifespan_runs(tmp_path: Path) -> None:
    """`create_app` builds no client and opens no database: the lifespan does."""
    create_app(relay_settings(tmp_path), seams=Seams(upstream_transport=FakeGrsai().transport()))
    assert not (tmp_path / "t.db").exists()


async def test_the_lifespan_closes_what_it_built(tmp_path: Path) -> None:
    """After the lifespan, the workers are stopped, the HTTP clients and the storage closed."""
    grsai, clock = FakeGrsai(), ManualClock()
    app = relay_app(tmp_path, grsai, clock)
    async with run(app, grsai, clock) as relay:
        services = relay.services
        workers = (services.poller, services.copier, services.deliverer)
        assert [w.alive for w in workers] == [True, True, True]
        assert (await relay.client.get("/readyz")).status_code == 200
    assert [w.alive for w in workers] == [False, False, False]
    assert isinstance(services.clients, HttpClients)
    assert all(pool.client.is_closed for pool in services.clients)
    with pytest.raises(StorageUnavailable):
        await services.storage.ping()


async def test_the_app_runs_again_after_it_stopped(tmp_path: Path) -> None:
    """A second run of the lifespan builds fresh clients, storage and workers, and serves."""
    grsai, clock = FakeGrsai(), ManualClock()
    app = relay_app(tmp_path, grsai, clock)
    async with run(app, grsai, clock) as first:
        created = await first.created()
        first_services = first.services
    async with run(app, grsai, clock) as second:
        assert second.services is not first_services
        assert isinstance(second.services.poller, Poller)
        assert second.services.poller.alive
        found = await second.client.get(f"/v1/tasks/{created['id']}", headers=first.auth())
        assert found.status_code == 200
        assert (await second.client.get("/readyz")).json()["status"] == "ready"
        again = await second.created()  # GrsAI is reached through the new clients
        assert again["status"] == "pending"
        metrics = await second.client.get("/metrics")
        assert 'grsai_relay_tasks{status="pending"} 2.0' in metrics.text


async def test_the_state_is_typed_and_reaches_every_request(tmp_path: Path) -> None:
    """The lifespan yields `{"services": Services}`; a request sees that run's services."""
    grsai, clock = FakeGrsai(), ManualClock()
    app = relay_app(tmp_path, grsai, clock)
    async with lifespan(app) as state:
        assert set(state) == set(State.__annotations__)
        assert (await state["services"].storage.schema_version()) >= 1
