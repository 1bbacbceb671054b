"""Several replicas on one PostgreSQL database, behind a load balancer that routes at random.

Three `python -m service serve` processes share a fresh database; GrsAI's callbacks (the
simulator, throwing drops, duplicates, reordering, late callbacks and failures) and the client's
submissions and lookups reach a random replica each time; one replica is SIGKILLed midway and
restarted. Every task must end as GrsAI holds it, reach GrsAI once, and be told to the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.simulator import SimulatorConfig
from service.storage.postgres.migrations import LATEST
from tests import pgserver
from tests.e2e.conftest import TERMINAL, auth
from tests.e2e.harness import (
    UPSTREAM_KEY,
    SimulatorServer,
    truth_outcome,
    truth_urls,
    webhook_token_hash,
)
from tests.e2e.receiver import Receiver
from tests.e2e.replicas import Campaign, Cluster, Row, lookup_all, run_campaign, settle, task_rows
from tests.s3server import S3Server

# Several replicas need PostgreSQL whatever the backend under test: only the PostgreSQL run
# (RELAY_TEST_BACKEND=postgresql) selects these, so they run once per `scripts/test`.
pytestmark = [pytest.mark.e2e, pytest.mark.postgresql_only]

SEED = 1414
SIMULATOR = SimulatorConfig(
    api_key=UPSTREAM_KEY,
    step_interval=0.05,
    progress_steps=2,
    callback_retries=2,
    callback_backoff=0.1,
    callback_timeout=15.0,  # longer than a verification poll on a busy machine
    fail_rate=0.1,
    duplicate_rate=0.1,
    reorder_rate=0.1,
    drop_rate=0.05,
    late_rate=0.1,
    late_delay=0.3,
    seed=SEED,
)
REPLICA_ENV = {
    "CALLBACK_SILENCE": "2",
    "POLLER_LEASE": "2",  # a poll leased by the killed replica comes back soon
    # A submission killed before GrsAI's id was stored, with every callback then lost, can only
    # be failed as `submit_interrupted`: after 15 s here, not 300 s.
    "SUBMIT_RECOVERY_GRACE": "15",
    "DELIVERY_SCHEDULE": "0,0.5,1,2,4,8",
    "DELIVERY_TIMEOUT": "10",
    # The copier leases a copy for ASSET_TIMEOUT + ASSET_STALL_TIMEOUT + 60 s (the deliverer
    # for 60 s + DELIVERY_TIMEOUT): what the killed replica held comes back after about 70 s.
    "ASSET_TIMEOUT": "5",
    "ASSET_STALL_TIMEOUT": "5",
}


@pytest.fixture(name="simulator")
def _simulator() -> Iterator[SimulatorServer]:
    """A simulator throwing the callback faults and failures, from one seed."""
    sim = SimulatorServer(SIMULATOR).start()
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # thousands of lines otherwise
    yield sim
    sim.stop()


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[Receiver]:
    """The client's own webhook endpoint, logging every delivery."""
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(name="database")
def _database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped after the test."""
    with pgserver.fresh_database() as url:
        yield url


@pytest.fixture(name="cluster")
async def _cluster(
    tmp_path: Path, database: str, simulator: SimulatorServer, s3_server: S3Server
) -> AsyncIterator[Cluster]:
    """Three replicas on the database, started together, behind the random proxy; their result
    files in one S3 bucket (each replica stages downloads in its own ASSET_DIR)."""
    files = {"ASSET_STORE": f"s3://{s3_server.new_bucket()}/results", **s3_server.env()}
    cluster = Cluster.build(tmp_path, database, simulator.url, 3, **REPLICA_ENV, **files)
    try:
        await cluster.start()
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


def check_upstream(rows: dict[str, Row], reports: list[dict[str, Any]]) -> dict[str, Row]:
    """No task reached GrsAI twice; every GrsAI task is a relay row (by its callback token);
    rows GrsAI never saw, or whose every callback was lost before its id was stored, failed as
    `submit_interrupted`. Return the row of each GrsAI task id."""
    webhooks = Counter(r["webhook"] for r in reports)
    assert max(webhooks.values(), default=1) == 1, f"sent twice: {webhooks.most_common(3)}"
    prompts = Counter(json.loads(r.input)["prompt"] for r in rows.values())
    assert max(prompts.values(), default=1) == 1, (
        f"one request, two tasks: {prompts.most_common(3)}"
    )
    by_token = {bytes(r.token_hash): r for r in rows.values()}
    row_of = {}
    for report in reports:
        row = by_token.get(webhook_token_hash(report["webhook"]))
        assert row is not None, f"GrsAI task {report['task']['id']} has no relay row"
        if row.upstream_id is None:  # GrsAI took it, the replica died, no callback got through
            assert not any(c["status"] == 200 for c in report["callbacks"]), row
        row_of[report["task"]["id"]] = row
    known = {r.id for r in row_of.values() if r.upstream_id is not None}
    for row in rows.values():
        if row.id not in known:
            assert (row.status, row.failure_reason, row.upstream_id) == (
                "failed",
                "submit_interrupted",
                None,
            ), row
    return {k: r for k, r in row_of.items() if r.upstream_id is not None}


def check_truth(row_of: dict[str, Row], reports: list[dict[str, Any]]) -> Counter[str]:
    """Every task GrsAI holds ends with GrsAI's status, failure reason and result URLs."""
    outcomes: Counter[str] = Counter()
    wrong = []
    for report in reports:
        truth, row = report["task"], row_of.get(report["task"]["id"])
        if row is None:
            continue
        assert row.upstream_id == truth["id"], row
        status, reason = truth_outcome(truth)
        expected = (status, reason, truth_urls(truth) if status == "succeeded" else [])
        if (row.status, row.failure_reason, row.urls) != expected:
            wrong.append((row, expected))
        outcomes[f"{status}/{reason}" if reason else status] += 1
    assert not wrong, f"{len(wrong)} tasks differ from GrsAI, e.g. {wrong[:2]}"
    return outcomes


async def check_callbacks_kept(
    cluster: Cluster, row_of: dict[str, Row], reports: list[dict[str, Any]]
) -> int:
    """Every GrsAI callback a replica answered 200 (through the proxy) is stored."""
    stored = Counter(
        (str(t), bytes(b))
        for t, b in await cluster.fetch(
            "SELECT task_id, body FROM events WHERE source = 'callback'"
        )
    )
    wanted = Counter(
        (row_of[r["task"]["id"]].id, c["raw"].encode())
        for r in reports
        if r["task"]["id"] in row_of
        for c in r["callbacks"]
        if c["status"] == 200
    )
    missing = wanted - stored
    assert not missing, f"acknowledged callbacks not stored: {list(missing)[:3]}"
    return sum(wanted.values())


async def check_deliveries(
    cluster: Cluster, rows: dict[str, Row], receiver: Receiver, *, exactly_once: bool
) -> Counter[int]:
    """Every task's final event reached the client (once each, when `exactly_once`), under
    the delivery's id, with the task's final status. Return how often each event came."""
    outbox: defaultdict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for delivery_id, task_id, event_type, status in await cluster.fetch(
        "SELECT id, task_id, event_type, status FROM deliveries"
    ):
        outbox[task_id].append((delivery_id, event_type, status))
    got: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for received in list(receiver.log):
        got[received.headers["webhook-id"]].append(json.loads(received.body))
    assert set(got) <= {d for ds in outbox.values() for d, _, _ in ds}, "unknown webhook-id"
    for row in rows.values():
        [(delivery_id, event_type, status)] = outbox[row.id]
        assert (event_type, status) == (f"task.{row.status}", "delivered"), row
        events = got[delivery_id]
        assert events, f"final event of {row.id} never reached the client"
        assert all((e["type"], e["data"]["id"]) == (event_type, row.id) for e in events)
        assert len(events) == 1 or not exactly_once, f"{row.id} told {len(events)} times"
    return Counter(len(events) for events in got.values())


async def check_run(
    cluster: Cluster,
    client: httpx.AsyncClient,
    sim: SimulatorServer,
    receiver: Receiver,
    campaign: Campaign,
    *,
    exactly_once: bool,
) -> None:
    """Every assertion on a settled run; print what happened."""
    reports, stats = await sim.reports(client), await sim.stats(client)
    rows = await task_rows(cluster)
    # A submit cut off by the kill before GrsAI read its body counts, but makes no task.
    assert stats["tasks"] == len(reports)
    assert stats["submits"] <= len(rows), "GrsAI saw more submits than the relay has tasks"
    row_of = check_upstream(rows, reports)
    outcomes = check_truth(row_of, reports)
    kept = await check_callbacks_kept(cluster, row_of, reports)
    told = await check_deliveries(cluster, rows, receiver, exactly_once=exactly_once)
    # Nothing acknowledged is lost: every 202 is a stored, final task, as any replica says.
    acked = {t["id"]: t for t in campaign.acked.values()}
    assert set(acked) <= set(rows), "a 202-acknowledged task is missing"
    looked_up = await lookup_all(client, cluster, campaign.key, list(acked))
    for task_id, task in looked_up.items():
        assert task["status"] in TERMINAL, task
        assert task["status"] == rows[task_id].status, (task, rows[task_id])
        assert acked[task_id]["upstream_id"] in (None, rows[task_id].upstream_id), task
    extra = set(rows) - set(acked)  # made by an attempt whose answer the client never got
    rolled = Counter(f for r in reports for f in r["faults"]["rolled"])
    print(
        f"\nreplicas: tasks={len(rows)} acked={len(acked)} unacknowledged rows={len(extra)}"
        f" kill after={campaign.killed_after} retried answers={dict(campaign.retried)}"
        f" replays through another replica={campaign.replays}"
        f"\nreplicas: GrsAI faults={dict(sorted(rolled.items()))}"
        f" outcomes={dict(sorted(outcomes.items()))} submits={stats['submits']}"
        f" interrupted={len(rows) - len(row_of)} callbacks sent={stats['callbacks_sent']}"
        f" acknowledged+stored={kept}"
        f"\nreplicas: proxy forwarded={dict(cluster.proxy.forwarded)}"
        f" refused={dict(cluster.proxy.refused)} broken={dict(cluster.proxy.broken)}"
        f"\nreplicas: client events received per delivery={dict(told)}"
    )
    assert not campaign.wrong, f"answers differ across replicas: {campaign.wrong[:3]}"
    assert all(cluster.proxy.forwarded[r.url] for r in cluster.relays), "a replica got no callback"
    assert len(acked) == campaign.tasks
    await check_files_everywhere(cluster, client, campaign.key)


async def check_files_everywhere(cluster: Cluster, client: httpx.AsyncClient, key: str) -> None:
    """Result files copied by any replica are served, intact, by every replica (from the S3
    bucket: no replica keeps a copy in its own ASSET_DIR)."""
    stored = await cluster.fetch(
        "SELECT task_id, n, sha256 FROM assets WHERE status = 'stored' ORDER BY task_id LIMIT 6"
    )
    assert stored, "no result file was copied"
    for task_id, n, sha in stored:
        for relay in cluster.relays:
            url = f"{relay.url}/v1/tasks/{task_id}/results/{n}"
            got = await client.get(url, headers=auth(key), timeout=60)
            assert got.status_code == 200, (relay.url, got.text)
            assert hashlib.sha256(got.content).hexdigest() == sha
    folders = [Path(relay.env["ASSET_DIR"]) for relay in cluster.relays]
    kept = await asyncio.to_thread(lambda: [p for f in folders for p in f.glob("??/??/*")])
    assert not kept, f"replicas kept files in their ASSET_DIR (they belong in S3): {kept}"


@pytest.mark.timeout(420)
async def test_three_replicas_and_a_sigkill_end_every_task_as_grsai_holds_it(
    cluster: Cluster, simulator: SimulatorServer, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """500 tasks, random routing, one replica killed and restarted: all end right, once."""
    started = time.monotonic()  # for the printed phase times only; nothing asserts on them
    campaign = await run_campaign(cluster, client, receiver.url("ok"), tasks=500, kill_after=200)
    print(f"\nreplicas: submitted in {time.monotonic() - started:.1f} s", flush=True)
    await settle(cluster, client, simulator)
    print(f"replicas: settled after {time.monotonic() - started:.1f} s", flush=True)
    await check_run(cluster, client, simulator, receiver, campaign, exactly_once=False)
    assert campaign.killed_after is not None


@pytest.mark.timeout(300)
async def test_three_replicas_without_kills_tell_each_client_event_once(
    cluster: Cluster, simulator: SimulatorServer, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    """150 tasks over three live replicas: every final event reaches the client exactly once."""
    campaign = await run_campaign(cluster, client, receiver.url("ok"), tasks=150, kill_after=None)
    await settle(cluster, client, simulator)
    await check_run(cluster, client, simulator, receiver, campaign, exactly_once=True)


async def test_two_replicas_started_at_once_on_an_empty_database_both_come_up(
    tmp_path: Path, database: str, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """Two replicas migrating one empty database at the same moment: both serve it."""
    cluster = Cluster.build(tmp_path, database, simulator.url, 2, **REPLICA_ENV)
    try:
        await cluster.start()
        for relay in cluster.relays:
            assert (await client.get(f"{relay.url}/healthz")).status_code == 200
        versions = await cluster.fetch("SELECT version FROM schema_version")
        assert versions == [(LATEST,)], "the schema was migrated once, to the latest version"
        key = cluster.relays[0].create_key("both")  # one database: a key made via one works on both
        for relay in cluster.relays:
            answer = await client.get(f"{relay.url}/v1/tasks", headers=auth(key))
            assert answer.status_code == 200, answer.text
    finally:
        await asyncio.to_thread(cluster.stop)
