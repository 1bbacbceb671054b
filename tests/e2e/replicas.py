"""Several relay replicas on one database behind a random-routing proxy (the load balancer),
and a client that submits and looks up through random replicas while one may be killed."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.balancer import RandomProxy
from tests.e2e.harness import (
    RelayProcess,
    SimulatorServer,
    free_port,
    relay_env,
    relay_upstream_urls,
)

MODELS = ("gpt-image-2", "nano-banana-fast", "flux-kontext-pro", "sora-2", "veo3.1-fast")
IN_FLIGHT = 24  # client requests at once
SLOW = 60.0  # client timeout: a machine shared with other test runs can be very slow


@dataclass
class Cluster:
    """Relay replicas sharing one database, behind one proxy (their PUBLIC_BASE_URL)."""

    relays: list[RelayProcess]
    proxy: RandomProxy
    database_url: str
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    @classmethod
    def build(
        cls, workdir: Path, database_url: str, simulator_url: str, size: int, **extra: str
    ) -> Cluster:
        """`size` replicas (not started yet) with the same settings, and the proxy (started)."""
        ports = [free_port() for _ in range(size)]
        proxy = RandomProxy([f"http://127.0.0.1:{p}" for p in ports]).start()
        # Every replica: the same database, the same file store (the S3 bucket in `extra`'s
        # ASSET_STORE; a local folder of its own otherwise), GrsAI's callbacks via the proxy.
        relays = []
        for n, port in enumerate(ports):
            assets = workdir / f"assets-{n}"
            env = relay_env(database_url, assets, simulator_url, public=False, port=0, **extra)
            env["PUBLIC_BASE_URL"] = proxy.url
            relays.append(RelayProcess(workdir, env, port=port))
        return cls(relays, proxy, database_url)

    async def start(self) -> None:
        """Start every replica at the same moment; wait until each answers /healthz."""
        await asyncio.gather(*(asyncio.to_thread(relay.start) for relay in self.relays))

    def pick(self, avoid: RelayProcess | None = None) -> RelayProcess:
        """A random replica, other than `avoid` when given."""
        return self.rng.choice([r for r in self.relays if r is not avoid])

    def stop(self) -> None:
        """Kill every replica and stop the proxy."""
        for relay in self.relays:
            relay.kill()
        self.proxy.stop()

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the shared database."""
        return await asyncio.to_thread(self.relays[0].query, sql)


@dataclass(frozen=True)
class Row:
    """One task row of the shared database."""

    id: str
    status: str
    failure_reason: str | None
    upstream_id: str | None
    results: str
    token_hash: bytes
    input: str

    @property
    def urls(self) -> list[str]:
        """GrsAI's result URLs as the relay stored them."""
        return relay_upstream_urls(json.loads(self.results))


async def settle(cluster: Cluster, client: httpx.AsyncClient, sim: SimulatorServer) -> None:
    """Wait until every task is final, no copy or delivery is due, and GrsAI is idle."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 240  # a hang guard; leases of the killed replica take 60-70 s
    while True:
        [counts] = await cluster.fetch(
            "SELECT (SELECT count(*) FROM tasks WHERE status NOT IN ('succeeded', 'failed')),"
            " (SELECT count(*) FROM assets WHERE status = 'pending'),"
            " (SELECT count(*) FROM deliveries WHERE status = 'pending')"
        )
        if not any(counts) and (await sim.stats(client))["idle"]:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not settled (open tasks, copies, deliveries): {counts}")
        await asyncio.sleep(0.2)


async def task_rows(cluster: Cluster) -> dict[str, Row]:
    """Every task row of the shared database by relay task id."""
    rows = await cluster.fetch(
        "SELECT id, status, failure_reason, upstream_id, results, token_hash, input FROM tasks"
    )
    return {r[0]: Row(*r) for r in rows}


@dataclass
class Campaign:
    """What the client saw while submitting through random replicas."""

    key: str
    tasks: int
    callback_url: str
    acked: dict[int, dict[str, Any]] = field(default_factory=dict)  # submission n -> its 202
    retried: Counter[str] = field(default_factory=Counter)  # answers retried on another replica
    replays: int = 0  # the same request sent again, on purpose, through another replica
    wrong: list[str] = field(default_factory=list)  # replicas that disagreed on a task
    killed_after: int | None = None  # how many 202s the client had when a replica was killed


async def _post(
    client: httpx.AsyncClient, cluster: Cluster, c: Campaign, n: int, avoid: RelayProcess | None
) -> tuple[RelayProcess, httpx.Response]:
    """POST submission `n` until a final answer. A dead replica, a 409 (the same key in flight)
    or a 503 is retried on another replica with the same Idempotency-Key, as a client would."""
    model = MODELS[n % len(MODELS)]
    body = {"model": model, "prompt": f"replicas {n}", "callback_url": c.callback_url}
    headers = {"Authorization": f"Bearer {c.key}", "Idempotency-Key": f"order-{n}"}
    for _ in range(600):  # a hang guard: minutes of retries
        relay = cluster.pick(avoid)
        try:
            answer = await client.post(
                f"{relay.url}/v1/tasks", json=body, headers=headers, timeout=SLOW
            )
        except (httpx.TransportError, AttributeError) as exc:  # AttributeError: see balancer
            c.retried[type(exc).__name__] += 1
        else:
            if answer.status_code not in (409, 503):
                return relay, answer
            c.retried[f"{answer.status_code} {answer.json()['error']['code']}"] += 1
        avoid = relay
        await asyncio.sleep(0.2)  # a client's back-off between retries
    raise AssertionError(f"submission {n} never got a final answer: {c.retried}")


async def get_task(
    client: httpx.AsyncClient, cluster: Cluster, key: str, task_id: str, avoid: RelayProcess | None
) -> dict[str, Any]:
    """`GET /v1/tasks/{id}` through a random replica (another one if a replica is down)."""
    for _ in range(600):  # a hang guard
        relay = cluster.pick(avoid)
        try:
            answer = await client.get(
                f"{relay.url}/v1/tasks/{task_id}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=SLOW,
            )
        except (httpx.TransportError, AttributeError):  # AttributeError: see balancer
            avoid = relay
            await asyncio.sleep(0.2)
            continue
        assert answer.status_code == 200, (relay.url, answer.text)
        task: dict[str, Any] = answer.json()
        return task
    raise AssertionError(f"no replica answered for {task_id}")


async def lookup_all(
    client: httpx.AsyncClient, cluster: Cluster, key: str, ids: list[str]
) -> dict[str, dict[str, Any]]:
    """Every task in `ids`, each looked up through a random replica."""
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(task_id: str) -> dict[str, Any]:
        async with slots:
            return await get_task(client, cluster, key, task_id, None)

    return {t["id"]: t for t in await asyncio.gather(*(one(i) for i in ids))}


async def run_campaign(
    cluster: Cluster,
    client: httpx.AsyncClient,
    callback_url: str,
    *,
    tasks: int,
    kill_after: int | None,
) -> Campaign:
    """Submit `tasks` tasks concurrently through random replicas, each read back through
    another; every fifth sent again through another. With `kill_after`, SIGKILL a replica once
    the client holds that many 202s, and restart it (same settings and database)."""
    key = await asyncio.to_thread(cluster.relays[0].create_key, "replicas")
    campaign = Campaign(key, tasks, callback_url)
    numbers = iter(range(tasks))
    midway = asyncio.Event()

    async def submit() -> None:
        for n in numbers:
            relay, answer = await _post(client, cluster, campaign, n, None)
            assert answer.status_code == 202, answer.text
            task = campaign.acked[n] = answer.json()
            if len(campaign.acked) == kill_after:
                midway.set()
            seen = await get_task(client, cluster, key, task["id"], relay)
            if seen["id"] != task["id"]:
                campaign.wrong.append(f"lookup of {task['id']} answered {seen['id']}")
            if n % 5 == 0:
                campaign.replays += 1
                _, again = await _post(client, cluster, campaign, n, relay)
                replayed = again.headers.get("Idempotent-Replayed") == "true"
                if again.status_code != 202 or again.json()["id"] != task["id"] or not replayed:
                    campaign.wrong.append(f"replay of {task['id']}: {again.text[:300]}")

    async def kill() -> None:
        if kill_after is None:
            return
        victim = cluster.relays[0]
        await asyncio.wait_for(midway.wait(), timeout=300)  # a hang guard
        await asyncio.to_thread(victim.kill)
        campaign.killed_after = len(campaign.acked)
        await asyncio.to_thread(victim.start)

    await asyncio.gather(kill(), *(submit() for _ in range(IN_FLIGHT)))
    return campaign
