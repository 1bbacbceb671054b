"""Fixtures that start real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.simulator import SimulatorConfig
from tests.e2e.backends import Databases, backend_under_test
from tests.e2e.harness import (
    STARTED,
    UPSTREAM_KEY,
    RelayProcess,
    SimulatorServer,
    free_port,
    reap,
    relay_env,
)
from tests.s3server import S3Server

pytestmark = pytest.mark.e2e
TERMINAL = ("succeeded", "failed")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL, deselect the tests about the SQLite file (`sqlite_only`) and those that do
    not depend on the backend under test (`no_database`: the SQLite run covers them); on
    SQLite, the tests about the PostgreSQL server (`postgresql_only`)."""
    if backend_under_test() == "sqlite":
        names: tuple[str, ...] = ("postgresql_only",)
    else:
        names = ("sqlite_only", "no_database")

    def left_out(item: pytest.Item) -> bool:
        return any(item.get_closest_marker(name) for name in names)

    dropped = [item for item in items if left_out(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not left_out(item)]


@pytest.fixture(autouse=True)
def _no_relay_outlives_its_test() -> Iterator[None]:
    """Relays a test left running (it failed before stopping them) are killed after it."""
    before = len(STARTED)  # a wider-scoped relay is set up before this and outlives the test
    yield
    reap(before)


@pytest.fixture(name="simulator")
def _simulator() -> Iterator[SimulatorServer]:
    """A fast simulator (50 ms between progress steps)."""
    sim = SimulatorServer(SimulatorConfig(api_key=UPSTREAM_KEY, step_interval=0.05)).start()
    yield sim
    sim.stop()


RelayFactory = Callable[..., RelayProcess]
ASSET_STORES = ("local", "s3")


def asset_store_under_test() -> str:
    """Where the e2e relays keep result files: env `RELAY_TEST_ASSET_STORE`, `local` (the
    folder ASSET_DIR) by default, or `s3` (a bucket of the test's own on a moto S3 server)."""
    store = os.environ.get("RELAY_TEST_ASSET_STORE") or "local"
    if store not in ASSET_STORES:
        raise pytest.UsageError(f"RELAY_TEST_ASSET_STORE={store!r}: use local or s3")
    return store


@pytest.fixture(name="s3_server", scope="session")
def _s3_server() -> Iterator[S3Server]:
    """One S3 API server (moto) on 127.0.0.1 for this test process; tests make own buckets."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(name="asset_env")
def _asset_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for the file store under test: none for the folder; for S3 a new bucket of
    this test (its relays share it) and the AWS variables of the test server."""
    if asset_store_under_test() == "local":
        return {}
    s3: S3Server = request.getfixturevalue("s3_server")
    return {"ASSET_STORE": f"s3://{s3.new_bucket()}/results", **s3.env()}


@pytest.fixture(name="databases")
def _databases(tmp_path: Path) -> Iterator[Databases]:
    """This test's databases on the backend `RELAY_TEST_BACKEND` names; dropped at teardown."""
    databases = Databases(tmp_path)
    try:
        yield databases
    finally:
        databases.drop_all()


@pytest.fixture(name="start_relay")
def _start_relay(
    tmp_path: Path, simulator: SimulatorServer, databases: Databases, asset_env: dict[str, str]
) -> Iterator[RelayFactory]:
    """Start relays (callback mode by default); all are stopped at teardown.

    Relays started with the same `db_name` share a database, and the `assets` folder beside
    that name in the test's folder (with RELAY_TEST_ASSET_STORE=s3, the test's bucket).
    """
    started: list[RelayProcess] = []

    def start(*, public: bool = True, db_name: str = "relay.db", **extra: str) -> RelayProcess:
        port = free_port()
        assets = (tmp_path / db_name).parent / "assets"
        env = relay_env(
            databases.url(db_name),
            assets,
            simulator.url,
            public=public,
            port=port,
            **{**asset_env, **extra},
        )
        relay = RelayProcess(tmp_path, env, port=port)
        started.append(relay)
        return relay.start()

    yield start
    for relay in started:
        relay.kill()


@pytest.fixture(name="relay")
def _relay(start_relay: RelayFactory) -> RelayProcess:
    """One relay in callback mode."""
    return start_relay()


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the tests."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


def settled(task: dict[str, Any]) -> bool:
    """Terminal, and no result file still waiting to be copied."""
    copying = any(r.get("asset", {}).get("status") == "pending" for r in task["results"])
    return task["status"] in TERMINAL and not copying


async def wait_for_task(
    client: httpx.AsyncClient,
    relay: RelayProcess,
    key: str,
    task_id: str,
    until: Callable[[dict[str, Any]], bool] = settled,
    within: float = 60.0,  # a hang guard: a loaded 2-core machine is many times slower
) -> dict[str, Any]:
    """Poll GET /v1/tasks/{id} until `until(task)` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        response = await client.get(f"{relay.url}/v1/tasks/{task_id}", headers=auth(key))
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        if until(task):
            return task
        if loop.time() > deadline:
            raise AssertionError(f"task never reached the wanted state: {task}")
        await asyncio.sleep(0.05)


def auth(key: str) -> dict[str, str]:
    """Authorization header."""
    return {"Authorization": f"Bearer {key}"}
