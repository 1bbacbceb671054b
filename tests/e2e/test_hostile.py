"""Hostile input against the real relay over real HTTP: precise 4xx JSON, never a 500 or a hang.

One table (`tests/hostile_cases.py`) is sent byte for byte to a relay subprocess whose target
task is kept still (`[sim:delay=600][sim:drop]`, no silence polling) and running at progress 30.
After the table the target and a second task must be exactly as they were, every callback that
reached them must be stored (none `applied`), and no request may have left a task behind.
Cases the relay got wrong carried `bug=`; every one is fixed and runs in the table.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RelayFactory, auth
from tests.e2e.harness import RelayProcess, SimulatorServer
from tests.hostile_cases import (
    ACK,
    API_LIMIT,
    SETUP_PROGRESS,
    Case,
    RawResponse,
    Target,
    exchange,
    hostile_cases,
    problems,
    render,
)

STILL = "[sim:delay=600][sim:drop]"  # no progress, no callbacks: only we move the task
CASES = hostile_cases()
TABLE = CASES
assert not [c.name for c in CASES if c.bug is not None], "a known bug belongs in an xfail test"


@dataclass
class Arena:
    """A relay, the target it is attacked through, and a plain HTTP client."""

    relay: RelayProcess
    target: Target
    client: httpx.AsyncClient

    async def task(self, task_id: str) -> dict[str, Any]:
        """GET /v1/tasks/{id} as the owner."""
        response = await self.client.get(
            f"{self.relay.url}/v1/tasks/{task_id}", headers=auth(self.target.key)
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def task_ids(self, key: str) -> set[str]:
        """The ids of every task `key` can list."""
        response = await self.client.get(f"{self.relay.url}/v1/tasks?limit=200", headers=auth(key))
        assert response.status_code == 200, response.text
        return {t["id"] for t in response.json()["data"]}

    async def send(self, case: Case) -> RawResponse:
        """Send one case on its own connection."""
        return await exchange(self.relay.port, render(case, self.target, self.relay.port))

    async def progress(self, value: int) -> httpx.Response:
        """A legitimate `running` callback for the target."""
        body = {"id": self.target.upstream_id, "status": "running", "progress": value}
        return await self.client.post(
            f"{self.relay.url}/webhooks/grsai/{self.target.token}", json=body
        )

    def events(self) -> list[tuple[str, str]]:
        """(task id, outcome) of every stored event, straight from the database."""
        rows = self.relay.query("SELECT task_id, outcome FROM events ORDER BY id")
        return [(str(t), str(o)) for t, o in rows]


async def _still_task(client: httpx.AsyncClient, relay: RelayProcess, key: str) -> dict[str, Any]:
    response = await client.post(
        f"{relay.url}/v1/tasks",
        json={"model": "nano-banana", "prompt": f"hostile target {STILL}"},
        headers=auth(key),
    )
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    return task


async def _token(client: httpx.AsyncClient, sim: SimulatorServer, upstream_id: str) -> str:
    response = await client.get(f"{sim.url}/_sim/tasks/{upstream_id}")
    assert response.status_code == 200, response.text
    webhook = response.json()["webhook"]
    assert isinstance(webhook, str)
    return webhook.rsplit("/", 1)[1]


@pytest.fixture(name="arena")
async def _arena(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> Arena:
    """A callback-mode relay with two still tasks, the target running at progress 30."""
    relay = start_relay(CALLBACK_SILENCE="3600", API_MAX_BODY_BYTES=str(API_LIMIT))
    key, other_key, revoked_key = (relay.create_key(n) for n in ("hostile", "other", "revoked"))
    relay.cli("keys", "revoke", revoked_key[:12])
    first = await _still_task(client, relay, key)
    second = await _still_task(client, relay, key)
    target = Target(
        token=await _token(client, simulator, first["upstream_id"]),
        task_id=first["id"],
        upstream_id=first["upstream_id"],
        other_token=await _token(client, simulator, second["upstream_id"]),
        other_task_id=second["id"],
        other_upstream_id=second["upstream_id"],
        key=key,
        other_key=other_key,
        revoked_key=revoked_key,
    )
    arena = Arena(relay, target, client)
    moved = await arena.progress(SETUP_PROGRESS)
    assert moved.status_code == 200, moved.text
    assert (await arena.task(target.task_id))["progress"] == SETUP_PROGRESS
    return arena


def _reaches_target(case: Case) -> bool:
    """True when the relay must store this case's body as an event of the target task."""
    stored = case.status == 200 or case.code in ("invalid_json", "invalid_payload")
    return case.method == "POST" and case.path == "/webhooks/grsai/{token}" and stored


async def test_hostile_table(arena: Arena) -> None:
    """Every hostile case gets its precise answer, and no stored task moves."""
    target = arena.target
    before = [await arena.task(target.task_id), await arena.task(target.other_task_id)]
    events_before = len(arena.events())
    print(f"\nhostile table: {len(TABLE)} cases")

    failures: list[str] = []
    oracles: dict[str, set[bytes]] = defaultdict(set)
    for case in TABLE:
        response = await arena.send(case)
        failures += [f"{case.name}: {p}" for p in problems(case, response)]
        if case.oracle is not None:
            oracles[case.oracle].add(response.body)
    assert not failures, "\n".join(failures)
    for group in ("token404", "token405"):
        assert len(oracles[group]) == 1, f"{group} answers differ: {oracles[group]}"

    after = [await arena.task(target.task_id), await arena.task(target.other_task_id)]
    assert after == before
    assert await arena.task_ids(target.key) == {target.task_id, target.other_task_id}
    assert await arena.task_ids(target.other_key) == set()
    new = arena.events()[events_before:]
    assert [o for _, o in new if o == "applied"] == []
    stored = [t for t, _ in new]
    assert stored.count(target.task_id) == sum(_reaches_target(c) for c in TABLE)
    assert stored.count(target.other_task_id) == 1  # the other task's token with our id
    assert "Traceback" not in arena.relay.logs()

    moved = await arena.progress(SETUP_PROGRESS + 1)  # the token the table used is live
    assert (moved.status_code, moved.json()) == (200, ACK)
    assert (await arena.task(target.task_id))["progress"] == SETUP_PROGRESS + 1


async def test_every_callback_path_404_is_identical(arena: Arena) -> None:
    """A 404 under /webhooks/grsai/ reads the same whether the router or the token refused it."""
    bodies = set()
    for case in CASES:
        if case.oracle in ("token404", "token404-route"):
            bodies.add((await arena.send(case)).body)
    assert len(bodies) == 1, bodies


def _nested_metadata(depth: int) -> bytes:
    nested = '{"a":' * depth + "1" + "}" * depth
    return f'{{"model":"nano-banana","prompt":"deep {STILL}","metadata":{nested}}}'.encode()


async def test_nesting_near_any_depth_limit_is_never_a_500(arena: Arena) -> None:
    """Metadata nested near MAX_DEPTH or the parser's recursion limit: never a 500; lists work."""
    # Before MAX_DEPTH, metadata nested 959-961 deep was parsed, stored and submitted, then the
    # 202 and every later GET /v1/tasks failed to encode it: a 500 and a poisoned listing.
    statuses: dict[int, int] = {}
    for depth in [*range(56, 72), *range(940, 1001)]:
        case = Case("deep metadata", "POST", "/v1/tasks", 0, body=_nested_metadata(depth),
                    headers=(("Authorization", "Bearer {key}"),))  # fmt: skip
        statuses[depth] = (await arena.send(case)).status
    listing = await arena.client.get(f"{arena.relay.url}/v1/tasks", headers=auth(arena.target.key))
    crashed = {d: s for d, s in statuses.items() if s >= 500}
    assert (crashed, listing.status_code) == ({}, 200)
    assert set(statuses.values()) <= {202, 400}


async def test_callback_nesting_near_the_parser_limit(arena: Arena) -> None:
    """Callback bodies nested near either depth limit are a 200 no-op or a 400, move nothing."""
    before = await arena.task(arena.target.task_id)
    for depth in [*range(56, 72), *range(940, 1001)]:
        extra = "[" * depth + "]" * depth
        body = json.dumps(
            {"id": arena.target.upstream_id, "status": "running", "progress": SETUP_PROGRESS}
        )
        raw = (body[:-1] + f',"x":{extra}}}').encode()
        case = Case("deep callback", "POST", "/webhooks/grsai/{token}", 0, body=raw)
        response = await arena.send(case)
        assert response.status in (200, 400), (depth, response.status, response.body[:200])
    assert await arena.task(arena.target.task_id) == before
    assert "Traceback" not in arena.relay.logs()
