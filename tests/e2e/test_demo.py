"""Demo mode as `scripts/serve` runs it: one demo key across restarts, useless once the relay
has a real GrsAI key, and a log with one line per request."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.backends import Databases
from tests.e2e.conftest import auth, wait_for_task
from tests.e2e.harness import UPSTREAM_KEY, RelayProcess, SimulatorServer, free_port

BANNER_RULE = "=" * 78


def demo_relay(workdir: Path, database_url: str, **extra: str) -> RelayProcess:
    """A relay without GRSAI_API_KEY (demo mode) run in `workdir` on that database, JSON logs."""
    env = {
        "DATABASE_URL": database_url,
        "ASSET_DIR": str(workdir / "assets"),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        **extra,
    }
    return RelayProcess(workdir, env, port=free_port()).start()


def banner(relay: RelayProcess) -> tuple[list[str], list[dict[str, Any]]]:
    """The banner's lines and the JSON log records, from everything the process printed."""
    lines = relay.logs().splitlines()
    first, last = (i for i, line in enumerate(lines) if line == BANNER_RULE)
    rest = [line for line in lines[:first] + lines[last + 1 :] if line]
    records = [json.loads(line) for line in rest if not line.startswith("ready ")]  # `ready URL`
    return lines[first : last + 1], records


def saved_key_file(relay: RelayProcess) -> Path:
    """The one file demo mode saved its key in: beside the SQLite file, or (PostgreSQL) beside
    the result files' folder, named after the database."""
    if relay.backend == "sqlite":
        return relay.db_path.with_name(relay.db_path.name + ".demo-key")
    [found] = Path(relay.env["ASSET_DIR"]).parent.glob("demo-key-*")
    return found


def shown(lines: list[str], label: str) -> str:
    """The value the banner prints after `label`."""
    [line] = [line for line in lines if line.strip().startswith(label)]
    return line.split(label, 1)[1].strip()


async def test_one_demo_key_across_restarts_refused_once_grsai_key_is_set(
    tmp_path: Path, databases: Databases, simulator: SimulatorServer, client: httpx.AsyncClient
) -> None:
    """Restarts reuse the saved key and signing secret; with GRSAI_API_KEY set it gets 401."""
    demo = demo_relay(tmp_path, databases.url())
    lines, _ = banner(demo)
    key, signing = shown(lines, "Demo API key:"), shown(lines, "Signing secret:")
    assert key.startswith("grk_")
    assert signing.startswith("whsec_")
    key_file = saved_key_file(demo)
    assert key_file.read_text() == f"{key}\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (await client.get(f"{demo.url}/v1/tasks", headers=auth(key))).status_code == 200
    assert demo.terminate() == 0

    again = demo_relay(tmp_path, databases.url())
    lines, _ = banner(again)
    assert (shown(lines, "Demo API key:"), shown(lines, "Signing secret:")) == (key, signing)
    assert (await client.get(f"{again.url}/v1/tasks", headers=auth(key))).status_code == 200
    assert again.terminate() == 0
    listed = [row.split("\t") for row in again.cli("keys", "list").splitlines()[1:]]
    assert [(r[1], r[2], r[4]) for r in listed] == [(key[:12], "demo", "active (demo mode only)")]

    real = RelayProcess(
        tmp_path,
        {**again.env, "GRSAI_API_KEY": UPSTREAM_KEY, "GRSAI_BASE_URL": simulator.url},
        port=free_port(),
    ).start()
    try:
        refused = await client.get(f"{real.url}/v1/tasks", headers=auth(key))
        assert refused.status_code == 401
        assert "demo mode" in refused.json()["error"]["message"]
        submitted = await client.post(
            f"{real.url}/v1/tasks", json={"model": "nano-banana", "prompt": "x"}, headers=auth(key)
        )
        assert submitted.status_code == 401
        own = real.create_key("backend")
        assert (await client.get(f"{real.url}/v1/tasks", headers=auth(own))).status_code == 200
        lines = real.logs().splitlines()
        assert f"ready {real.url}" in lines  # the line a program waits for, not a log record
        records = [json.loads(line) for line in lines if not line.startswith("ready ")]
        warnings = [r["msg"] for r in records if r["level"] == "warning"]
        assert warnings == [
            f"GRSAI_BASE_URL {simulator.url} is not a public address, and FETCH_ALLOW_NETWORKS"
            " does not admit 127.0.0.1: copies of its result files will fail;"
            " set FETCH_ALLOW_NETWORKS=127.0.0.1/32"
        ]
    finally:
        real.terminate()


async def test_demo_logs_each_request_once_and_labels_the_simulator(
    tmp_path: Path, databases: Databases, client: httpx.AsyncClient
) -> None:
    """Every line but the banner is JSON; one per request; the simulator's start lines say so."""
    demo = demo_relay(tmp_path, databases.url())
    lines, _ = banner(demo)
    key = shown(lines, "Demo API key:")
    created = await client.post(
        f"{demo.url}/v1/tasks",
        json={"model": "nano-banana-fast", "prompt": "a lighthouse"},
        headers=auth(key),
    )
    assert created.status_code == 202, created.text
    task = await wait_for_task(client, demo, key, created.json()["id"], within=30.0)
    assert task["results"][0]["asset"]["status"] == "stored"
    assert demo.terminate() == 0
    _, records = banner(demo)
    requests = [r for r in records if r.get("event") == "request"]
    ids = [r["request_id"] for r in requests]
    assert len(ids) == len(set(ids)) > 3  # the submit, GrsAI's callbacks, the lookups
    assert not [r for r in records if ' HTTP/1.1"' in r["msg"]]  # no access line besides ours
    started = [r["logger"] for r in records if r["msg"].startswith("Started server process")]
    assert sorted(started) == ["grsai_relay.simulator", "uvicorn.error"]
    assert "uvicorn.access" not in {r["logger"] for r in records}
