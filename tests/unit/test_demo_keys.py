"""Demo keys: flagged in the database, refused outside demo mode, one kept across restarts."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from service.cli.demo import demo_key, demo_key_file
from service.domain.credentials import hash_secret, new_api_key
from service.domain.records import ApiKey
from service.settings import Settings
from service.storage.sqlite import SQLiteStorage
from service.storage.sqlite.migrations import MIGRATIONS
from tests.unit.conftest import FakeEntropy, MakeRelay, Relay


async def add_demo_key(relay: Relay) -> str:
    """Store a key flagged `demo`, as demo mode makes it; return its secret."""
    made = new_api_key(relay.services.entropy)
    key = ApiKey(made.id, "demo", made.prefix, relay.clock.now(), demo=True)
    await relay.storage.create_api_key(key, hash_secret(made.secret))
    return made.secret


async def test_a_demo_key_is_refused_when_the_relay_has_a_real_grsai_key(relay: Relay) -> None:
    """Every authenticated route answers 401 to a demo key outside demo mode, saying why."""
    secret = await add_demo_key(relay)
    task = await relay.created()
    for path in (
        "/v1/tasks",
        f"/v1/tasks/{task['id']}",
        f"/v1/tasks/{task['id']}/deliveries",
        f"/v1/tasks/{task['id']}/results/0",
    ):
        response = await relay.client.get(path, headers=relay.auth(secret))
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized"
        assert "demo mode" in response.json()["error"]["message"]
    submitted = await relay.submit(key=secret)
    assert submitted.status_code == 401
    assert (await relay.client.get("/v1/tasks", headers=relay.auth())).status_code == 200


async def test_a_demo_key_works_in_demo_mode(make_relay: MakeRelay) -> None:
    """In demo mode the same key is accepted, for lookups and submits alike."""
    relay = await make_relay(demo_mode=True)
    secret = await add_demo_key(relay)
    assert (await relay.client.get("/v1/tasks", headers=relay.auth(secret))).status_code == 200
    assert (await relay.submit(key=secret)).status_code == 202


async def test_keys_named_demo_before_the_flag_existed_become_demo_keys(tmp_path: Path) -> None:
    """Migration 4 flags the keys earlier demo starts made (named "demo"), and only those."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:3]:
        for statement in migration:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    entropy = FakeEntropy()
    for name in ("demo", "demo", "backend"):
        made = new_api_key(entropy)
        conn.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, created_at) VALUES (?,?,?,?,?)",
            (made.id, name, made.prefix, hash_secret(made.secret), 1.0),
        )
    conn.commit()
    conn.close()
    storage = SQLiteStorage(str(path))
    await storage.open()
    try:
        flags = sorted((k.name, k.demo) for k in await storage.list_api_keys())
    finally:
        await storage.close()
    assert flags == [("backend", False), ("demo", True), ("demo", True)]


@pytest.fixture(name="demo_env")
def _demo_env(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/data/relay.db", grsai_api_key=None)


async def active_demo_keys(settings: Settings) -> list[ApiKey]:
    """The demo keys that are not revoked."""
    storage = SQLiteStorage(f"{settings.database_url.removeprefix('sqlite:///')}")
    await storage.open()
    try:
        return [k for k in await storage.list_api_keys() if k.demo and k.revoked_at is None]
    finally:
        await storage.close()


async def test_demo_key_is_saved_privately_and_reused(demo_env: Settings) -> None:
    """The first start saves the key (mode 0600) beside the database; later starts reuse it."""
    first = await demo_key(demo_env)
    path = demo_key_file(demo_env)
    assert path == Path(f"{demo_env.database_url.removeprefix('sqlite:///')}.demo-key")
    assert path.read_text() == f"{first[0]}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first[1].startswith("whsec_")
    assert await demo_key(demo_env) == first
    assert await demo_key(demo_env) == first
    assert [k.name for k in await active_demo_keys(demo_env)] == ["demo"]


@pytest.mark.parametrize("damage", ["lost", "garbled", "revoked"])
async def test_a_lost_or_revoked_demo_key_is_replaced_and_the_old_revoked(
    demo_env: Settings, damage: str
) -> None:
    """Without a usable saved key a new one is made; no other demo key stays active."""
    first, _ = await demo_key(demo_env)
    path = demo_key_file(demo_env)
    if damage == "lost":
        path.unlink()
    elif damage == "garbled":
        path.write_text("not a key\n")
    else:
        storage = SQLiteStorage(demo_env.database_url.removeprefix("sqlite:///"))
        await storage.open()
        await storage.revoke_api_key(first[:12], 2.0)
        await storage.close()
    second, _ = await demo_key(demo_env)
    assert second != first
    assert path.read_text() == f"{second}\n"
    active = await active_demo_keys(demo_env)
    assert [k.prefix for k in active] == [second[:12]]
