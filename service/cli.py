"""The `grsai-relay` command: serve, simulator, keys, tasks, assets, purge, db."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from service import cli_ops
from service.cli_ops import duration, with_storage
from service.clock import SystemClock, rfc3339
from service.credentials import SystemEntropy, hash_secret, new_api_key
from service.logs import configure as configure_logging
from service.records import TASK_STATUSES, ApiKey
from service.settings import Settings
from service.signing import new_secret
from service.simulator import SimulatorConfig, run_simulator


async def create_key(settings: Settings, name: str) -> tuple[str, str]:
    """Create an API key (stored hashed) and its webhook signing secret; return both."""
    storage = await with_storage(settings)
    try:
        made = new_api_key(SystemEntropy())
        now = SystemClock().now()
        key = ApiKey(made.id, name, made.prefix, now)
        await storage.create_api_key(key, hash_secret(made.secret))
        signing = new_secret()
        await storage.add_signing_secret(made.id, signing, now, retire_others_at=None)
        return made.secret, signing
    finally:
        await storage.close()


async def rotate_secret(settings: Settings, key_id: str, grace_hours: float | None) -> str | None:
    """A new signing secret for a key (by id or prefix); the old one signs for a grace period."""
    storage = await with_storage(settings)
    try:
        found = [k for k in await storage.list_api_keys() if key_id in (k.id, k.prefix)]
        if not found or found[0].revoked_at is not None:
            return None
        hours = settings.secret_rotation_grace_hours if grace_hours is None else grace_hours
        now = SystemClock().now()
        signing = new_secret()
        await storage.add_signing_secret(found[0].id, signing, now, now + hours * 3600)
        return signing
    finally:
        await storage.close()


async def _keys(settings: Settings, ns: argparse.Namespace) -> int:
    if ns.keys_command == "create":
        secret, signing = await create_key(settings, ns.name)
        print(secret)
        print(signing)
        print(
            "Line 1 is the API key (shown once, stored only as a hash); line 2 is the secret\n"
            "that signs callbacks to your callback_url (Standard Webhooks, whsec_...).",
            file=sys.stderr,
        )
        return 0
    if ns.keys_command == "rotate-secret":
        rotated = await rotate_secret(settings, ns.key_id, ns.grace_hours)
        if rotated is None:
            print(f"no active key with id or prefix {ns.key_id!r}", file=sys.stderr)
            return 1
        print(rotated)
        print(
            "New signing secret; the old one keeps signing during the grace period.",
            file=sys.stderr,
        )
        return 0
    storage = await with_storage(settings)
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


async def _migrate(settings: Settings) -> int:
    storage = await with_storage(settings)
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
        demo_key, _ = asyncio.run(create_key(settings, "demo"))
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
    rotate = keys_sub.add_parser("rotate-secret", help="new webhook signing secret for a key")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-hours", type=float, default=None)
    tasks = sub.add_parser("tasks", help="inspect tasks of every key")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    tasks_sub.add_parser(
        "show", help="a task with its events and deliveries, as JSON"
    ).add_argument("task_id")
    listing = tasks_sub.add_parser("list", help="tasks newest first, one a line")
    listing.add_argument("--status", choices=TASK_STATUSES, default=None)
    listing.add_argument("--model", default=None)
    listing.add_argument("--key", default=None, help="only this key's (id or prefix)")
    listing.add_argument("--limit", type=_positive, default=50)
    assets = sub.add_parser("assets", help="stored result files")
    prune = assets.add_subparsers(dest="assets_command", required=True).add_parser(
        "prune", help="remove copies of tasks older than ASSET_RETENTION_DAYS"
    )
    prune.add_argument("--older-than-days", type=float, default=None)
    purge = sub.add_parser("purge", help="delete old finished tasks and everything about them")
    purge.add_argument(
        "--older-than", type=duration, required=True, help="completed this long ago: 30d, 12h, 90m"
    )
    purge.add_argument("--dry-run", action="store_true", help="only print what would go")
    purge.add_argument("--batch", type=_positive, default=500, help="tasks per transaction")
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("migrate", help="apply pending migrations")
    db_sub.add_parser("backup", help="consistent copy of the live database").add_argument("path")
    return top


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `grsai-relay` console script."""
    ns = parser().parse_args(argv)
    if ns.command == "simulator":
        run_simulator(ns.host, ns.port, SimulatorConfig.from_cli(ns))
        return 0
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if ns.command == "serve":
        return _serve(settings, ns.host or settings.host, ns.port or settings.port)
    if ns.command == "keys":
        return asyncio.run(_keys(settings, ns))
    if ns.command == "tasks":
        return asyncio.run(cli_ops.tasks(settings, ns))
    if ns.command == "assets":
        return asyncio.run(cli_ops.prune(settings, ns.older_than_days))
    if ns.command == "purge":
        return asyncio.run(cli_ops.purge(settings, ns.older_than, ns.dry_run, ns.batch))
    if ns.db_command == "backup":
        return cli_ops.backup(settings, ns.path)
    return asyncio.run(_migrate(settings))


if __name__ == "__main__":
    sys.exit(main())
