"""The `grsai-relay` command-line grammar: every command, its arguments and their help."""

from __future__ import annotations

import argparse
from pathlib import Path

from service.cli.ops import DURATION_FORMS, duration
from service.domain.records import TASK_STATUSES
from service.simulator import SimulatorConfig

DESCRIPTION = (
    "The `grsai-relay` command: serve, simulator, keys, tasks, submit, doctor, assets, purge, db."
)


def parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    top = argparse.ArgumentParser(prog="grsai-relay", description=DESCRIPTION)
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
    watch = tasks_sub.add_parser("watch", help="follow a task live on a running relay")
    watch.add_argument("task_id")
    _follow_options(watch)
    _relay_options(watch)
    listing = tasks_sub.add_parser("list", help="tasks newest first, one a line")
    listing.add_argument("--status", choices=TASK_STATUSES, default=None)
    listing.add_argument("--model", default=None)
    listing.add_argument("--key", default=None, help="only this key's (id or prefix)")
    listing.add_argument("--limit", type=_positive, default=50)
    submit = sub.add_parser("submit", help="submit a task to a running relay")
    submit.add_argument("--model", required=True)
    submit.add_argument("--prompt", required=True)
    submit.add_argument(
        "--param",
        type=pair,
        action="append",
        metavar="NAME=VALUE",
        help="a GrsAI parameter (repeatable); VALUE is JSON when it parses, else text",
    )
    submit.add_argument(
        "--metadata", type=pair, action="append", metavar="NAME=VALUE", help="a text label"
    )
    submit.add_argument("--wait", action="store_true", help="follow the task until it is done")
    _follow_options(submit)
    _relay_options(submit)
    doctor = sub.add_parser("doctor", help="check the settings and every dependency")
    doctor.add_argument(
        "--min-free-mb",
        type=_positive,
        default=1024,
        help="warn when DATA_DIR or ASSET_DIR has less free space (default: 1024)",
    )
    _relay_options(doctor)
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


def _relay_options(command: argparse.ArgumentParser) -> None:
    """Where the running relay is, and the API key to call it with."""
    command.add_argument(
        "--url", default=None, help="the relay (default: RELAY_URL, else http://127.0.0.1:PORT)"
    )
    command.add_argument(
        "--key", default=None, help="API key (default: RELAY_API_KEY; the demo key in demo mode)"
    )


def _follow_options(command: argparse.ArgumentParser) -> None:
    """Where the result files go, and how long to follow a task."""
    command.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="save the result files here"
    )
    command.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="S",
        help="give up following after S seconds (exit 2; the task goes on)",
    )


def pair(text: str) -> tuple[str, str]:
    """`NAME=VALUE` as (name, value); a bad one is a usage error."""
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name.strip(), value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a number of seconds above 0")
    return value
