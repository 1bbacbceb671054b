"""Scale: over a thousand tasks through one relay, with GrsAI misbehaving at random all along.

The simulator fails, duplicates, reorders, drops and delays callbacks, hides new tasks from
polls for a moment and breaks one poll in ten (HTML pages, cut JSON, dropped connections, 500,
429), all from one seed. Every task must still end exactly as GrsAI holds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.simulator import SimulatorConfig
from service.simulator.catalog import submit_paths
from tests.e2e.conftest import TERMINAL, RelayFactory, auth
from tests.e2e.harness import (
    UPSTREAM_KEY,
    RelayProcess,
    SimulatorServer,
    relay_upstream_urls,
    truth_outcome,
    truth_urls,
)

pytestmark = pytest.mark.e2e

SEED = 4242
TASKS = 1000
IN_FLIGHT = 32
SLOW = 60.0  # client timeout: a machine shared with other test runs can be very slow
# Every model of the five families, in turn.
MODELS = [(m.name, m.max_variants) for sp in submit_paths() for m in sp.models]
FAULTY_SIMULATOR = SimulatorConfig(
    api_key=UPSTREAM_KEY,
    step_interval=0.05,
    progress_steps=2,
    callback_retries=2,
    callback_backoff=0.1,
    # Longer than the relay's verification poll may take on a busy machine: a retry of a
    # callback the relay is still working on only adds load.
    callback_timeout=15.0,
    fail_rate=0.1,
    duplicate_rate=0.1,
    reorder_rate=0.1,
    drop_rate=0.05,
    late_rate=0.1,
    late_delay=0.3,
    poll_miss_seconds=0.2,
    poll_fault_rate=0.1,
    seed=SEED,
)


@pytest.fixture(name="simulator")
def _simulator() -> Iterator[SimulatorServer]:
    """A simulator that throws every random fault it knows, from one seed."""
    sim = SimulatorServer(FAULTY_SIMULATOR).start()
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # thousands of lines otherwise
    yield sim
    sim.stop()


def submission(n: int) -> dict[str, Any]:
    """The n-th task: models in turn, two variants now and then, some without progress."""
    model, max_variants = MODELS[n % len(MODELS)]
    body: dict[str, Any] = {"model": model, "prompt": f"scale test {n}"}
    if max_variants > 1 and n % 3 == 0:
        body["variants"] = 2
    if n % 7 == 0:
        body["shutProgress"] = True
    return body


async def submit_all(
    client: httpx.AsyncClient, relay: RelayProcess, key: str
) -> tuple[dict[str, str], Counter[str]]:
    """Submit TASKS tasks, IN_FLIGHT at a time; return relay id -> upstream id, and refusals."""
    accepted: dict[str, str] = {}
    refused: Counter[str] = Counter()
    numbers = iter(range(TASKS))

    async def worker() -> None:
        for n in numbers:
            response = await client.post(
                f"{relay.url}/v1/tasks", json=submission(n), headers=auth(key), timeout=SLOW
            )
            if response.status_code == 202:
                accepted[response.json()["id"]] = response.json()["upstream_id"]
            else:
                error = response.json()["error"]
                refused[f"{response.status_code} {error['code']}: {error['message'][:160]}"] += 1

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return accepted, refused


async def all_tasks(client: httpx.AsyncClient, relay: RelayProcess, key: str) -> list[Any]:
    """Every task of `key` through `GET /v1/tasks`, following the cursor."""
    tasks: list[Any] = []
    cursor: str | None = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        url = f"{relay.url}/v1/tasks"
        page = (await client.get(url, params=params, headers=auth(key), timeout=SLOW)).json()
        tasks += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return tasks


async def wait_all_terminal(relay: RelayProcess, ids: set[str], within: float) -> None:
    """Wait until every task in `ids` is terminal, reading the database."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        open_ids = [i for i, s in relay.query("SELECT id, status FROM tasks") if s not in TERMINAL]
        open_ids = [i for i in open_ids if i in ids]
        if not open_ids:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{len(open_ids)} tasks stuck, e.g. {open_ids[:5]}")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(300)
async def test_a_thousand_tasks_with_random_faults_end_as_grsai_holds_them(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """1000 tasks of all five families under random faults: every one ends as GrsAI says."""
    relay = start_relay(CALLBACK_SILENCE="2")
    key = relay.create_key("scale")
    started = time.monotonic()  # for the printed phase times only; nothing asserts on them
    accepted, refused = await submit_all(client, relay, key)
    submitted = time.monotonic()
    print(f"\nscale: submitted in {submitted - started:.1f} s", flush=True)
    assert not refused, f"submissions refused: {dict(refused)}"
    assert len(accepted) == TASKS
    await wait_all_terminal(relay, set(accepted), within=120)
    settled = time.monotonic()
    print(f"scale: all terminal {settled - submitted:.1f} s later", flush=True)
    await simulator.wait_idle(client, within=120)
    print(f"scale: simulator idle {time.monotonic() - settled:.1f} s later", flush=True)

    reports = {r["task"]["id"]: r for r in await simulator.reports(client)}
    stats = await simulator.stats(client)
    tasks = {t["id"]: t for t in await all_tasks(client, relay, key)}
    assert set(tasks) == set(accepted)
    assert stats["submits"] == stats["tasks"] == len(reports) == TASKS

    outcomes: Counter[str] = Counter()
    wrong: list[tuple[Any, Any]] = []
    for task_id, upstream_id in accepted.items():
        task, report = tasks[task_id], reports[upstream_id]
        truth = report["task"]
        assert task["upstream_id"] == upstream_id
        assert report["mode"] == "callback"
        got = (task["status"], task["failure_reason"], relay_upstream_urls(task["results"]))
        status, reason = truth_outcome(truth)
        expected = (status, reason, truth_urls(truth) if status == "succeeded" else [])
        if got != expected:
            wrong.append((got, expected))
        outcomes[f"{task['status']}/{task['failure_reason']}" if reason else task["status"]] += 1

    rolled = Counter(f for r in reports.values() for f in r["faults"]["rolled"])
    poll_faults = Counter(k for r in reports.values() for k in r["poll_faults"])
    events = Counter(
        f"{source}/{outcome}"
        for source, outcome in relay.query("SELECT source, outcome FROM events")
    )
    print(
        f"\nscale: tasks={len(accepted)} outcomes={dict(sorted(outcomes.items()))}"
        f"\nscale: task faults={dict(sorted(rolled.items()))}"
        f"\nscale: polls={stats['polls']} broken polls={stats['poll_faults']}"
        f" by kind={dict(sorted(poll_faults.items()))}"
        f"\nscale: callbacks sent={stats['callbacks_sent']}"
        f" relay events={dict(sorted(events.items()))}"
        f"\nscale: wrong={len(wrong)}"
    )
    assert not wrong, f"{len(wrong)} tasks differ from GrsAI, e.g. {wrong[:3]}"
    assert all(t["status"] in TERMINAL for t in tasks.values())
