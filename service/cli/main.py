"""The `grsai-relay` command: serve, simulator, keys, tasks, assets, purge, db."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from service.cli import keys as cli_keys
from service.cli import ops as cli_ops
from service.cli.ops import DURATION_FORMS, duration, with_storage
from service.cli.preflight import CannotListen, workers_problem
from service.domain.errors import StorageUnavailable
from service.domain.records import TASK_STATUSES
from service.logs import configure as configure_logging
from service.settings import Settings, settings_problems
from service.simulator import SimulatorConfig, run_simulator

log = logging.getLogger("grsai_relay")


def _serve(settings: Settings, host: str, port: int, workers: int, tunnel: str) -> int:
    """Bind the port first, then the tunnel (if any), the database (and demo key), then start
    serving: here, or in `workers` processes sharing the socket (see `supervisor`)."""
    from service.app import create_app
    from service.cli.demo import (
        banner,
        demo_key,
        demo_key_file,
        demo_settings,
        own_url,
        start_simulator,
    )
    from service.cli.preflight import listen, loopback_fetch_warning
    from service.cli.tunnels import open_public_address, ready_line, say
    from service.server import serve
    from service.tunnel.public import PublicAddress

    sock = listen(host, port)
    port = sock.getsockname()[1]
    local_url, demo = own_url(host, port), settings.demo_mode
    tunnelled = open_public_address(settings, tunnel, local_url)
    if tunnelled is None:
        sock.close()
        return 1
    simulator = None
    try:
        if demo:
            key, signing = asyncio.run(demo_key(settings))
            simulator = start_simulator()
            settings = demo_settings(settings, simulator.url, host, port)
        else:
            asyncio.run(_open_database(settings))
            warning = loopback_fetch_warning(settings)
            if warning is not None:
                log.warning(warning)
        if tunnel != "none":  # the tunnel's URL (None: it never came up, poll mode)
            settings = settings.model_copy(update={"public_base_url": tunnelled.public.url})
        public = tunnelled.public if tunnel != "none" else PublicAddress(settings.public_base_url)
        app = create_app(settings, demo_mode=demo, public=public) if workers == 1 else None
        if demo:
            print(banner(settings, key, signing, demo_key_file(settings)), flush=True)
        # uvicorn names the address only for sockets it bound itself
        log.info("listening on http://%s:%d", *sock.getsockname()[:2])
        if app is None:
            from service.cli.supervisor import supervise

            return supervise(
                settings, demo, sock, workers, lambda: say(ready_line(public, local_url))
            )
        serve(app, settings, sock, on_started=lambda: say(ready_line(public, local_url)))
        return 0
    finally:
        sock.close()
        tunnelled.stop()
        if simulator is not None:
            simulator.stop()  # a server thread left running at exit can crash the interpreter


async def _open_database(settings: Settings) -> int:
    """Open (and migrate) the database; return its schema version. A bad path fails here."""
    storage = await with_storage(settings)
    try:
        return await storage.schema_version()
    finally:
        await storage.close()


def parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    top = argparse.ArgumentParser(prog="grsai-relay", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the relay (demo mode without GRSAI_API_KEY)")
    serve.add_argument("--host", default=None, help="bind address (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default: PORT or 8000)")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="processes serving the port (default: WORKERS or 1; more than 1 needs PostgreSQL)",
    )
    serve.add_argument(
        "--tunnel",
        choices=("none", "ngrok", "cloudflared"),
        default=None,
        help="open a tunnel and use its URL as the public URL (default: TUNNEL or none)",
    )
    serve.add_argument(
        "--tunnel-fallback",
        choices=("exit", "poll"),
        default=None,
        help="when the tunnel cannot come up: exit, or serve in poll mode (TUNNEL_FALLBACK)",
    )
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
    _age_options(prune, default="ASSET_RETENTION_DAYS")
    purge = sub.add_parser("purge", help="delete old finished tasks and everything about them")
    _age_options(purge, default=None)  # no default: purging everything takes an explicit 0s
    purge.add_argument("--batch", type=_positive, default=500, help="tasks per transaction")
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("migrate", help="apply pending migrations")
    backup = db_sub.add_parser("backup", help="consistent copy of the live database")
    backup.add_argument("path", help="the copy's file name (its folder must exist)")
    backup.add_argument(
        "--force", action="store_true", help="replace PATH if it exists; create missing folders"
    )
    return top


def _age_options(command: argparse.ArgumentParser, default: str | None) -> None:
    """`--older-than DURATION` (required without a default setting) and `--dry-run`."""
    command.add_argument(
        "--older-than",
        type=duration,
        required=default is None,
        help=f"completed this long ago: {DURATION_FORMS}"
        + (f" (default: {default})" if default else ""),
    )
    command.add_argument("--dry-run", action="store_true", help="only print what would go")


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
    try:
        settings = Settings()
    except ValidationError as exc:
        for line in settings_problems(exc):
            print(line, file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return _run(settings, ns)
    except (StorageUnavailable, CannotListen) as exc:
        print(f"grsai-relay: {exc}", file=sys.stderr)
        return 1


def _run(settings: Settings, ns: argparse.Namespace) -> int:
    if ns.command == "serve":
        port = settings.port if ns.port is None else ns.port
        workers = settings.workers if ns.workers is None else ns.workers
        asked_by = f"WORKERS={workers}" if ns.workers is None else f"--workers {workers}"
        problem = workers_problem(settings, workers, asked_by)
        tunnel = ns.tunnel or settings.tunnel
        if problem is None and tunnel != "none" and workers > 1:
            problem = f"--tunnel runs in one process; it cannot be used with {asked_by}"
        if problem is not None:
            print(f"grsai-relay: {problem}", file=sys.stderr)
            return 2
        if ns.tunnel_fallback is not None:
            settings = settings.model_copy(update={"tunnel_fallback": ns.tunnel_fallback})
        return _serve(settings, ns.host or settings.host, port, workers, tunnel)
    if ns.command == "keys":
        return asyncio.run(cli_keys.keys(settings, ns))
    if ns.command == "tasks":
        return asyncio.run(cli_ops.tasks(settings, ns))
    if ns.command == "assets":
        return asyncio.run(cli_ops.prune(settings, ns.older_than, ns.dry_run))
    if ns.command == "purge":
        return asyncio.run(cli_ops.purge(settings, ns.older_than, ns.dry_run, ns.batch))
    if ns.db_command == "backup":
        return cli_ops.backup(settings, ns.path, force=ns.force)
    print(f"database schema at version {asyncio.run(_open_database(settings))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
