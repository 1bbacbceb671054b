"""kill -9 durability: the relay dies at random moments while callbacks pour in, and loses nothing.

The relay runs as `python -m service serve` and is killed with SIGKILL (no shutdown code runs),
then restarted on the same port and database. Everything the relay acknowledged must be in
the database, every task must end exactly as GrsAI (the simulator) holds it, and no task may
reach GrsAI twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from service.simulator import SimulatorConfig
from tests.e2e.conftest import TERMINAL, RelayFactory, auth, wait_for_task
from tests.e2e.harness import (
    UPSTREAM_KEY,
    RelayProcess,
    SimulatorServer,
    relay_upstream_urls,
    truth_outcome,
    truth_urls,
    webhook_token_hash,
)

pytestmark = pytest.mark.e2e

SEED = 20251125
TASKS = 150  # at least this many tasks get a 202
WORKERS = 4  # clients submitting in parallel
PACE = 0.15  # seconds each client waits between submissions (about 25 a second in all)
KILLS = 5
MODELS = ("gpt-image-2", "nano-banana-fast", "flux-kontext-pro", "sora-2", "veo3.1-fast")
# A callback to a dead relay is retried 3 times, 0.05 s doubling: 0.35 s of cover, less than a
# restart takes, so some callbacks are lost for good and the poller has to finish those tasks.
CRASH_SIMULATOR = SimulatorConfig(
    api_key=UPSTREAM_KEY,
    step_interval=0.03,
    progress_steps=8,
    callback_retries=3,
    callback_backoff=0.05,
    callback_timeout=3.0,
    seed=SEED,
)
# A poll leased by a process that was then killed comes back after the lease, not 60 s later.
CRASH_RELAY_ENV = {"POLLER_LEASE": "2"}
# A submission killed before GrsAI's task id was stored, whose every callback was then lost
# too, can only be failed as `submit_interrupted`; in the kill campaign that happens after 20 s
# (long after any callback of such a short task could come), not 300 s.
CAMPAIGN_RELAY_ENV = {**CRASH_RELAY_ENV, "SUBMIT_RECOVERY_GRACE": "20"}


@pytest.fixture(name="simulator")
def _simulator() -> Iterator[SimulatorServer]:
    """A simulator with many progress callbacks, each retried briefly with backoff."""
    sim = SimulatorServer(CRASH_SIMULATOR).start()
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # thousands of lines otherwise
    yield sim
    sim.stop()


@dataclass(frozen=True)
class Row:
    """One task row, read straight from the database."""

    id: str
    status: str
    progress: int
    upstream_id: str | None
    results: str
    failure_reason: str | None
    token_hash: bytes | None
    submit_state: str


def task_rows(relay: RelayProcess) -> dict[str, Row]:
    """Every task row by relay task id."""
    rows = relay.query(
        "SELECT id, status, progress, upstream_id, results, failure_reason, token_hash,"
        " submit_state FROM tasks"
    )
    return {r[0]: Row(*r) for r in rows}


def stored_callbacks(relay: RelayProcess) -> Counter[tuple[str, bytes]]:
    """(relay task id, raw body) of every stored callback event, with multiplicity."""
    rows = relay.query("SELECT task_id, body FROM events WHERE source = 'callback'")
    return Counter((str(t), b if isinstance(b, bytes) else str(b).encode()) for t, b in rows)


def result_urls(row: Row) -> list[str]:
    """GrsAI's result URLs as the relay stored them for a task."""
    return relay_upstream_urls(json.loads(row.results))


@dataclass
class Campaign:
    """What the client saw while the relay was being killed."""

    acked: dict[str, str] = field(default_factory=dict)  # relay task id -> upstream id
    attempts: int = 0
    not_acked: Counter[str] = field(default_factory=Counter)  # why an attempt got no 202
    kills: int = 0


async def submit_one(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, n: int, campaign: Campaign
) -> None:
    """One submission; only a 202 counts (a relay that is down simply loses the attempt)."""
    campaign.attempts += 1
    prompt = f"crash test {n}" + (" [sim:fail=error]" if n % 10 == 3 else "")
    body = {"model": MODELS[n % len(MODELS)], "prompt": prompt}
    try:
        response = await client.post(f"{relay.url}/v1/tasks", json=body, headers=auth(key))
    except httpx.TransportError as exc:
        campaign.not_acked[type(exc).__name__] += 1
        return
    if response.status_code != 202:
        campaign.not_acked[f"HTTP {response.status_code}"] += 1
        return
    task = response.json()
    campaign.acked[task["id"]] = task["upstream_id"]


async def keep_submitting(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, campaign: Campaign
) -> None:
    """Submit steadily from WORKERS clients until the kills are over and TASKS were acknowledged.

    The stream is steady so that kills also land in the middle of submissions.
    """
    numbers = iter(range(1_000_000))

    async def worker() -> None:
        while campaign.kills < KILLS or len(campaign.acked) < TASKS:
            assert campaign.attempts < 20 * TASKS, f"relay keeps refusing: {campaign.not_acked}"
            await submit_one(client, relay, key, next(numbers), campaign)
            await asyncio.sleep(PACE)

    await asyncio.gather(*(worker() for _ in range(WORKERS)))


async def keep_killing(relay: RelayProcess, rng: random.Random, campaign: Campaign) -> None:
    """SIGKILL the relay KILLS times at random moments, restarting it each time."""
    for _ in range(KILLS):
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        await asyncio.to_thread(relay.restart)
        campaign.kills += 1


async def settle(
    client: httpx.AsyncClient, relay: RelayProcess, sim: SimulatorServer, acked: set[str]
) -> None:
    """Wait until every task is terminal (interrupted submissions included: they fail after
    SUBMIT_RECOVERY_GRACE) and the simulator is idle."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while True:
        open_rows = [r for r in task_rows(relay).values() if r.status not in TERMINAL]
        if not open_rows and (await sim.stats(client))["idle"]:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{len(open_rows)} tasks stuck, e.g. {open_rows[:3]}")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
async def test_sigkill_loses_no_acknowledged_callback(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """Killed with SIGKILL 5 times under load: every 200 is stored, every task ends right."""
    relay = start_relay(**CAMPAIGN_RELAY_ENV)
    key = relay.create_key("crash")
    campaign = Campaign()
    await asyncio.gather(
        keep_submitting(client, relay, key, campaign),
        keep_killing(relay, random.Random(SEED), campaign),
    )
    await settle(client, relay, simulator, set(campaign.acked))

    # The simulator's log first: every 200 in it was committed before it was sent.
    reports = await simulator.reports(client)
    stats = await simulator.stats(client)
    rows = task_rows(relay)
    stored = stored_callbacks(relay)

    # Which relay row is each GrsAI task? The callback token in its webHook says so.
    by_token = {r.token_hash: r for r in rows.values()}
    row_of: dict[str, Row] = {}
    orphans: list[Row] = []  # killed after GrsAI took the task, before its id was stored
    for report in reports:
        row = by_token.get(webhook_token_hash(report["webhook"]))
        assert row is not None, f"GrsAI task {report['task']['id']} has no relay row"
        row_of[report["task"]["id"]] = row
        if row.upstream_id is None:
            # Only the task's own callbacks could have bound it; all of them were lost (a
            # stored one binds the id), so the relay can only fail it, and never said 202.
            assert not any(c["status"] == 200 for c in report["callbacks"]), row
            assert row.id not in campaign.acked, row
            assert (row.status, row.failure_reason) == ("failed", "submit_interrupted"), row
            orphans.append(row)
            del row_of[report["task"]["id"]]
    reports = [r for r in reports if r["task"]["id"] in row_of]
    relay_ids = [r.id for r in [*row_of.values(), *orphans]]
    assert len(set(relay_ids)) == len(relay_ids), "a relay task was submitted to GrsAI twice"
    assert stats["tasks"] == len(reports) + len(orphans)
    assert stats["submits"] <= len(rows), "GrsAI saw more submits than the relay has tasks"
    unsent = [r for r in rows.values() if r.id not in set(relay_ids)]
    assert all(r.upstream_id is None and r.id not in campaign.acked for r in unsent), unsent
    for upstream_id, row in row_of.items():
        assert row.upstream_id == upstream_id, (row, upstream_id)
    for relay_id, upstream_id in campaign.acked.items():
        assert row_of[upstream_id].id == relay_id

    sent = acknowledged = lost = 0
    refused: Counter[str] = Counter()  # why callback POSTs failed (relay down, killed mid-way)
    wanted: Counter[tuple[str, bytes]] = Counter()
    behind: list[str] = []  # stored progress below an acknowledged callback's
    unfinished: list[Row] = []  # not terminal (after a terminal callback was acknowledged)
    wrong: list[tuple[Row, Any]] = []  # status, failure_reason or results not GrsAI's
    for report in reports:
        truth, row = report["task"], row_of[report["task"]["id"]]
        acked_bodies = [c for c in report["callbacks"] if c["status"] == 200]
        lost += len({c["raw"] for c in report["callbacks"]} - {c["raw"] for c in acked_bodies})
        sent += len(report["callbacks"])
        acknowledged += len(acked_bodies)
        refused.update(
            (c["error"] or f"HTTP {c['status']}").split(":")[0]
            for c in report["callbacks"]
            if c["status"] != 200
        )
        for callback in acked_bodies:
            wanted[(row.id, callback["raw"].encode())] += 1
        top = max((c["body"]["progress"] for c in acked_bodies), default=0)
        if row.progress < top:
            behind.append(f"{row.id} ({row.status}): {row.progress} < acknowledged {top}")
        if row.status not in TERMINAL:
            unfinished.append(row)
        expected = truth_urls(truth) if truth["status"] == "succeeded" else []
        if (row.status, row.failure_reason) != truth_outcome(truth) or result_urls(row) != expected:
            wrong.append((row, truth))
    polled = {t for (t,) in relay.query("SELECT DISTINCT task_id FROM events WHERE source='poll'")}
    missing = wanted - stored
    found = sum((wanted & stored).values())
    recovered = [r for r in row_of.values() if r.id not in campaign.acked]

    print(
        f"\ncrash: kills={campaign.kills} submit attempts={campaign.attempts}"
        f" acked (202)={len(campaign.acked)} not acked={dict(campaign.not_acked)}"
        f"\ncrash: tasks at GrsAI={len(reports)} (submits seen {stats['submits']})"
        f" relay rows={len(rows)} recovered without a 202={len(recovered)}"
        f" interrupted with every callback lost={len(orphans)}"
        f" never reached GrsAI={len(unsent)}"
        f"\ncrash: callbacks sent={sent} acknowledged 200={acknowledged}"
        f" found in DB={found} missing={sum(missing.values())}"
        f" stored callback events={sum(stored.values())} GrsAI polls={stats['polls']}"
        f"\ncrash: failed callback POSTs={dict(refused)}"
        f" callbacks lost for good={lost} tasks finished by the poller={len(polled)}"
        f"\ncrash: progress behind={len(behind)} unfinished={len(unfinished)} wrong={len(wrong)}"
    )
    assert not missing, f"acknowledged callbacks not in the database: {list(missing)[:3]}"
    assert not unfinished, f"stuck although GrsAI finished them: {unfinished[:3]}"
    assert not wrong, f"not as GrsAI holds them: {wrong[:2]}"
    assert not behind, f"acknowledged progress not stored: {behind[:5]}"
    assert campaign.kills == KILLS
    assert len(campaign.acked) >= TASKS


async def first_sim_task(client: httpx.AsyncClient, sim: SimulatorServer) -> str:
    """Wait for the simulator to hold a task; return its id."""
    for _ in range(6000):  # a hang guard of 60 s
        if ids := await sim.task_ids(client):
            return ids[0]
        await asyncio.sleep(0.01)
    raise AssertionError("GrsAI never got the task")


@pytest.mark.parametrize("mode", ["callback", "poll"])
async def test_sigkill_while_waiting_for_the_submit_answer(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient, mode: str
) -> None:
    """Killed after GrsAI took the task but before answering: recovered or failed, never resent."""
    public = mode == "callback"
    grace = {} if public else {"SUBMIT_RECOVERY_GRACE": "1"}
    relay = start_relay(public=public, **grace, **CRASH_RELAY_ENV)
    key = relay.create_key("slow")
    body: dict[str, Any] = {
        "model": "nano-banana",
        # GrsAI holds the task back until the test lets it finish, after the restart.
        "prompt": "a lighthouse [sim:slowack=3] [sim:delay=600]",
    }
    submit = asyncio.create_task(client.post(f"{relay.url}/v1/tasks", json=body, headers=auth(key)))
    upstream_id = await first_sim_task(client, simulator)
    await asyncio.to_thread(relay.kill)
    with pytest.raises(httpx.TransportError):
        await submit
    [row] = task_rows(relay).values()
    assert (row.submit_state, row.upstream_id, row.status) == ("submitting", None, "pending")

    await asyncio.to_thread(relay.start)
    listed = (await client.get(f"{relay.url}/v1/tasks", headers=auth(key))).json()["data"]
    assert [t["id"] for t in listed] == [row.id]
    # Only now do GrsAI's callbacks come, to a relay that is up however long the restart took.
    hurried = await client.post(f"{simulator.url}/_sim/tasks/{upstream_id}/complete")
    assert hurried.status_code == 200
    done = await wait_for_task(client, relay, key, row.id)
    truth = (await client.get(f"{simulator.url}/_sim/tasks/{upstream_id}")).json()
    if public:
        assert (done["status"], done["upstream_id"]) == ("succeeded", upstream_id)
        assert relay_upstream_urls(done["results"]) == truth_urls(truth["task"])
    else:
        assert (done["status"], done["failure_reason"]) == ("failed", "submit_interrupted")
        assert done["upstream_id"] is None
    stats = await simulator.stats(client)
    assert (stats["submits"], stats["tasks"]) == (1, 1)
    assert len(task_rows(relay)) == 1


async def test_acknowledged_progress_of_a_failed_task_is_kept(
    relay: RelayProcess, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """A failed callback acknowledged with progress P leaves the task at progress >= P."""
    # The deterministic form of the crash test's progress check: there the progress callbacks
    # of a failing task can be lost while the relay is down; here `shutProgress` never sends them.
    key = relay.create_key("p")
    body = {"model": "nano-banana", "prompt": "x [sim:fail=error]", "shutProgress": True}
    created = (await client.post(f"{relay.url}/v1/tasks", json=body, headers=auth(key))).json()
    done = await wait_for_task(client, relay, key, created["id"])
    report = (await client.get(f"{simulator.url}/_sim/tasks/{created['upstream_id']}")).json()
    [final] = report["callbacks"]
    assert (final["status"], final["body"]["status"]) == (200, "failed")
    assert final["body"]["progress"] == report["task"]["progress"] > 0
    assert done["status"] == "failed"
    assert done["progress"] >= final["body"]["progress"], done
