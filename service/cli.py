"""The `grsai-relay` command: serve, simulator, keys, db."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from service.clock import SystemClock, rfc3339
from service.credentials import SystemEntropy, hash_secret, new_api_key
from service.logs import configure as configure_logging
from service.records import ApiKey
from service.settings import Settings
from service.simulator import SimulatorConfig, run_simulator
from service.storage import Storage, open_storage


async def _with_storage(settings: Settings) -> Storage:
    storage = open_storage(settings)
    await storage.open()
    return storage


async def create_key(settings: Settings, name: str) -> str:
    """Create an API key, store its hash, return the secret (shown once)."""
    storage = await _with_storage(settings)
    try:
        made = new_api_key(SystemEntropy())
        key = ApiKey(made.id, name, made.prefix, SystemClock().now())
        await storage.create_api_key(key, hash_secret(made.secret))
        return made.secret
    finally:
        await storage.close()


async def _keys(settings: Settings, ns: argparse.Namespace) -> int:
    if ns.keys_command == "create":
        secret = await create_key(settings, ns.name)
        print(secret)
        print("Store this key now: it is shown once and kept only as a hash.", file=sys.stderr)
        return 0
    storage = await _with_storage(settings)
    try:
        if ns.keys_command == "list":
            for key in await storage.list_api_keys():
                state = f"revoked {rfc3339(key.revoked_at)}" if key.revoked_at else "active"
                print(f"{key.id}\t{key.prefix}…\t{key.name}\t{rfc3339(key.created_at)}\t{state}")
            return 0
        if await storage.revoke_api_key(ns.key_id, SystemClock().now()):
            print(f"revoked {ns.key_id}")
            return 0
        print(f"no active key with id or prefix {ns.key_id!r}", file=sys.stderr)
        return 1
    finally:
        await storage.close()


async def _prune(settings: Settings, older_than_days: float | None) -> int:
    from service.assets.store import LocalAssetStore

    days = older_than_days if older_than_days is not None else settings.asset_retention_days
    started = SystemClock().now()
    cutoff = started - days * 86400
    store = LocalAssetStore(settings.asset_dir)
    storage = await _with_storage(settings)
    pruned, removed = 0, 0
    try:
        while True:
            count, orphans = await storage.prune_assets(cutoff, 500)
            pruned += count
            for sha in orphans:
                removed += await store.delete(sha, unused_since=started - 60)
            if count < 500:
                break
    finally:
        await storage.close()
    print(f"retired {pruned} copies of tasks completed over {days:g} days ago")
    print(f"removed {removed} files no remaining task refers to")
    return 0


async def _migrate(settings: Settings) -> int:
    storage = await _with_storage(settings)
    try:
        print(f"database schema at version {await storage.schema_version()}")
    finally:
        await storage.close()
    return 0


def _serve(settings: Settings, host: str, port: int) -> int:
    from service.app import create_app
    from service.demo import banner, demo_settings, start_simulator
    from service.server import serve

    demo_key = None
    if settings.demo_mode:
        settings = demo_settings(settings, start_simulator(), host, port)
        demo_key = asyncio.run(create_key(settings, "demo"))
    app = create_app(settings)
    if demo_key is not None:
        print(banner(settings, demo_key, host, port), flush=True)
    serve(app, settings, host, port)
    return 0


def parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    top = argparse.ArgumentParser(prog="grsai-relay", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the relay (demo mode without GRSAI_API_KEY)")
    serve.add_argument("--host", default=None, help="bind address (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default: PORT or 8000)")
    sim = sub.add_parser("simulator", help="run the GrsAI simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8001)
    SimulatorConfig.add_cli_arguments(sim)
    keys = sub.add_parser("keys", help="manage client API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("create", help="create a key (printed once)").add_argument(
        "--name", required=True
    )
    keys_sub.add_parser("list", help="list keys")
    keys_sub.add_parser("revoke", help="revoke a key by id or prefix").add_argument("key_id")
    assets = sub.add_parser("assets", help="stored result files")
    prune = assets.add_subparsers(dest="assets_command", required=True).add_parser(
        "prune", help="remove copies of tasks older than ASSET_RETENTION_DAYS"
    )
    prune.add_argument("--older-than-days", type=float, default=None)
    db = sub.add_parser("db", help="database maintenance")
    db.add_subparsers(dest="db_command", required=True).add_parser(
        "migrate", help="apply pending migrations"
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `grsai-relay` console script."""
    ns = parser().parse_args(argv)
    if ns.command == "simulator":
        run_simulator(ns.host, ns.port, SimulatorConfig.from_cli(ns))
        return 0
    settings = Settings()
    configure_logging(settings.log_level)
    if ns.command == "serve":
        return _serve(settings, ns.host or settings.host, ns.port or settings.port)
    if ns.command == "keys":
        return asyncio.run(_keys(settings, ns))
    if ns.command == "assets":
        return asyncio.run(_prune(settings, ns.older_than_days))
    return asyncio.run(_migrate(settings))


if __name__ == "__main__":
    sys.exit(main())
