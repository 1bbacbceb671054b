"""End to end: real relay under uvicorn, real simulator, real database, real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RelayFactory, auth, wait_for_task
from tests.e2e.harness import UPSTREAM_KEY, RelayProcess, SimulatorServer

FAMILIES = ["gpt-image-2", "nano-banana-fast", "flux-kontext-pro", "sora-2", "veo3.1-fast"]


async def submit(
    client: httpx.AsyncClient, relay: RelayProcess, key: str, **body: Any
) -> dict[str, Any]:
    """POST /v1/tasks and insist on 202."""
    body.setdefault("prompt", "a lighthouse at dusk")
    response = await client.post(f"{relay.url}/v1/tasks", json=body, headers=auth(key))
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    return task


async def sim_task(client: httpx.AsyncClient, sim: SimulatorServer, upstream_id: str) -> Any:
    """The simulator's ground truth for a task."""
    response = await client.get(f"{sim.url}/_sim/tasks/{upstream_id}")
    assert response.status_code == 200
    return response.json()


def events(relay: RelayProcess, task_id: str) -> list[tuple[str, str]]:
    """(source, outcome) of every stored event of a task, straight from the database."""
    rows = relay.query(
        "SELECT source, outcome FROM events WHERE task_id = ? ORDER BY id", (task_id,)
    )
    return [(str(s), str(o)) for s, o in rows]


@pytest.mark.parametrize("model", FAMILIES)
async def test_each_family_succeeds_via_callbacks(
    relay: RelayProcess, simulator: SimulatorServer, client: httpx.AsyncClient, model: str
) -> None:
    """A task of each endpoint family goes from submit to succeeded through callbacks."""
    key = relay.create_key("a")
    created = await submit(client, relay, key, model=model, metadata={"order": 7})
    assert created["status"] in ("pending", "running")
    done = await wait_for_task(client, relay, key, created["id"])
    truth = await sim_task(client, simulator, done["upstream_id"])
    assert done["status"] == "succeeded"
    assert done["progress"] == 100
    assert done["metadata"] == {"order": 7}
    assert done["completed_at"] is not None
    assert [r["upstream_url"] for r in done["results"]] == truth_urls(truth["task"])
    assert ("callback", "applied") in events(relay, created["id"])
    assert truth["mode"] == "callback"


def truth_urls(task: dict[str, Any]) -> list[str]:
    """Result URLs as the simulator holds them (results list, else top-level url)."""
    urls = [r["url"] for r in task.get("results") or [] if r.get("url")]
    return urls or [task["url"]]


@pytest.mark.parametrize("model", FAMILIES)
async def test_each_family_succeeds_in_poll_mode(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient, model: str
) -> None:
    """Without PUBLIC_BASE_URL tasks are submitted with webHook -1 and the poller finds results."""
    relay = start_relay(public=False)
    key = relay.create_key("a")
    created = await submit(client, relay, key, model=model)
    done = await wait_for_task(client, relay, key, created["id"])
    truth = await sim_task(client, simulator, done["upstream_id"])
    assert truth["mode"] == "poll"
    assert truth["callbacks"] == []
    assert done["status"] == "succeeded"
    assert [r["upstream_url"] for r in done["results"]] == truth_urls(truth["task"])


@pytest.mark.parametrize("reason", ["output_moderation", "input_moderation", "error"])
async def test_moderation_failures_are_reported(
    relay: RelayProcess, client: httpx.AsyncClient, reason: str
) -> None:
    """A task GrsAI fails ends failed with GrsAI's failure_reason and error text."""
    key = relay.create_key("a")
    created = await submit(
        client, relay, key, model="nano-banana", prompt=f"cat [sim:fail={reason}]"
    )
    done = await wait_for_task(client, relay, key, created["id"])
    assert done["status"] == "failed"
    assert done["failure_reason"] == reason
    assert done["error"]
    assert done["results"] == []


async def test_flux_fail_reason_alias_is_read(
    relay: RelayProcess, client: httpx.AsyncClient
) -> None:
    """Flux reports `fail_reason`; it lands in failure_reason."""
    key = relay.create_key("a")
    created = await submit(
        client, relay, key, model="flux-kontext-pro", prompt="x [sim:fail=output_moderation]"
    )
    done = await wait_for_task(client, relay, key, created["id"])
    assert (done["status"], done["failure_reason"]) == ("failed", "output_moderation")


async def test_submit_rejection_is_502_and_recorded(
    relay: RelayProcess, client: httpx.AsyncClient
) -> None:
    """Insufficient credits: the client gets 502 with GrsAI's message; the task is stored failed."""
    key = relay.create_key("a")
    response = await client.post(
        f"{relay.url}/v1/tasks",
        json={"model": "nano-banana", "prompt": "x [sim:reject]"},
        headers=auth(key),
    )
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_rejected"
    assert "insufficient credits" in error["message"]
    stored = await client.get(f"{relay.url}/v1/tasks/{error['task_id']}", headers=auth(key))
    assert stored.json()["status"] == "failed"
    assert stored.json()["failure_reason"] == "submit_rejected"


@pytest.mark.parametrize("status", [401, 429])
async def test_upstream_http_errors_at_submit_are_502(
    relay: RelayProcess, client: httpx.AsyncClient, status: int
) -> None:
    """GrsAI answering 401 or 429 to a submit gives the client a 502, never a 500."""
    key = relay.create_key("a")
    response = await client.post(
        f"{relay.url}/v1/tasks",
        json={"model": "nano-banana", "prompt": f"x [sim:http={status}]"},
        headers=auth(key),
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_rejected"


@pytest.mark.parametrize(
    "directive", ["[sim:duplicate]", "[sim:reorder]", "[sim:drop]", "[sim:drop=final]"]
)
async def test_misbehaving_callbacks_still_end_right(
    relay: RelayProcess,
    simulator: SimulatorServer,
    client: httpx.AsyncClient,
    directive: str,
) -> None:
    """Duplicated, reordered and dropped callbacks still end in the state GrsAI holds."""
    key = relay.create_key("a")
    created = await submit(client, relay, key, model="gpt-image-2", prompt=f"x {directive}")
    done = await wait_for_task(client, relay, key, created["id"])
    truth = await sim_task(client, simulator, done["upstream_id"])
    assert done["status"] == truth["task"]["status"] == "succeeded"
    assert [r["upstream_url"] for r in done["results"]] == truth_urls(truth["task"])
    # settle: late duplicates must not change the final state
    again = await wait_for_task(client, relay, key, created["id"])
    assert again["results"] == done["results"]
    assert again["completed_at"] == done["completed_at"]


async def test_forged_terminal_callback_with_valid_token_is_not_believed(
    relay: RelayProcess, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """A forged 'succeeded' with fake URLs, sent with the real token, never becomes the result."""
    key = relay.create_key("a")
    created = await submit(client, relay, key, model="gpt-image-2", prompt="x [sim:delay=1.5]")
    truth = await sim_task(client, simulator, created["upstream_id"])
    forged = {
        "id": created["upstream_id"],
        "status": "succeeded",
        "progress": 100,
        "results": [{"url": "https://evil.example/fake.png", "width": 1, "height": 1}],
    }
    response = await client.post(truth["webhook"], json=forged)
    assert response.status_code == 200
    now = await client.get(f"{relay.url}/v1/tasks/{created['id']}", headers=auth(key))
    assert now.json()["status"] != "succeeded"
    assert ("callback", "rejected") in events(relay, created["id"])
    done = await wait_for_task(client, relay, key, created["id"])
    assert done["status"] == "succeeded"
    assert "evil.example" not in str(done["results"])


async def test_callback_for_another_tasks_id_is_rejected(
    relay: RelayProcess, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """A body whose id is not this task's upstream id gets 400 and is recorded as rejected."""
    key = relay.create_key("a")
    created = await submit(client, relay, key, model="gpt-image-2", prompt="x [sim:delay=1]")
    truth = await sim_task(client, simulator, created["upstream_id"])
    body = {"id": "1-someone-elses-task", "status": "running", "progress": 50}
    response = await client.post(truth["webhook"], json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_payload"
    assert ("callback", "rejected") in events(relay, created["id"])


async def test_tenancy_other_key_sees_nothing(
    relay: RelayProcess, client: httpx.AsyncClient
) -> None:
    """Key B gets 404 for key A's task and does not see it in its list."""
    key_a, key_b = relay.create_key("a"), relay.create_key("b")
    created = await submit(client, relay, key_a, model="nano-banana")
    other = await client.get(f"{relay.url}/v1/tasks/{created['id']}", headers=auth(key_b))
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    listing = await client.get(f"{relay.url}/v1/tasks", headers=auth(key_b))
    assert listing.json() == {"data": [], "next_cursor": None}
    mine = await client.get(f"{relay.url}/v1/tasks", headers=auth(key_a))
    assert [t["id"] for t in mine.json()["data"]] == [created["id"]]


async def test_revoked_key_is_refused(relay: RelayProcess, client: httpx.AsyncClient) -> None:
    """After `keys revoke`, the key gets 401."""
    key = relay.create_key("a")
    assert (await client.get(f"{relay.url}/v1/tasks", headers=auth(key))).status_code == 200
    relay.cli("keys", "revoke", key[:12])
    refused = await client.get(f"{relay.url}/v1/tasks", headers=auth(key))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"


async def test_idempotent_retry_submits_nothing_upstream(
    relay: RelayProcess, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """Same Idempotency-Key and body: the same task, and GrsAI sees one submit."""
    key = relay.create_key("a")
    headers = {**auth(key), "Idempotency-Key": "order-42"}
    body = {"model": "nano-banana", "prompt": "one only"}
    before = (await client.get(f"{simulator.url}/_sim/stats")).json()["submits"]
    first = await client.post(f"{relay.url}/v1/tasks", json=body, headers=headers)
    second = await client.post(f"{relay.url}/v1/tasks", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    after = (await client.get(f"{simulator.url}/_sim/stats")).json()["submits"]
    assert after - before == 1
    changed = await client.post(
        f"{relay.url}/v1/tasks", json={**body, "prompt": "another"}, headers=headers
    )
    assert changed.status_code == 422
    assert changed.json()["error"]["code"] == "idempotency_key_reused"


async def test_health_and_readiness(relay: RelayProcess, client: httpx.AsyncClient) -> None:
    """/healthz answers ok; /readyz reports each check by name."""
    assert (await client.get(f"{relay.url}/healthz")).json() == {"status": "ok"}
    ready = await client.get(f"{relay.url}/readyz")
    assert ready.status_code == 200
    assert set(ready.json()["checks"]) >= {"database", "settings", "poller"}


async def test_callback_tokens_never_reach_the_logs(
    start_relay: RelayFactory, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """JSON logs carry request ids; tokens, API keys and signing secrets appear nowhere."""
    relay = start_relay(LOG_LEVEL="debug", LOG_FORMAT="json", DELIVERY_SCHEDULE="0,0.1")
    key, secret = relay.cli("keys", "create", "--name", "a").splitlines()[:2]
    response = await client.post(
        f"{relay.url}/v1/tasks",
        json={"model": "nano-banana", "prompt": "x", "callback_url": "http://127.0.0.1:9/hook"},
        headers={**auth(key), "X-Request-ID": "trace-me-1"},
    )
    created = response.json()
    await wait_for_task(client, relay, key, created["id"])
    token = (await sim_task(client, simulator, created["upstream_id"]))["webhook"].rsplit("/", 1)[1]
    logs = relay.logs()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert any(line.get("request_id") == "trace-me-1" for line in requests)
    assert all(line.get("request_id") for line in requests)
    assert any(line.get("path", "").startswith("/webhooks/grsai/***") for line in requests)
    for secret_text in (token, key, secret, UPSTREAM_KEY):
        assert secret_text not in logs
