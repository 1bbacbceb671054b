"""The `grsai-relay` command: what each command runs (the grammar is in `grammar`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from service.cli import keys as cli_keys
from service.cli import ops as cli_ops
from service.cli import remote
from service.cli.client import CommandFailed
from service.cli.grammar import parser
from service.cli.ops import with_storage
from service.cli.preflight import CannotListen, workers_problem
from service.domain.errors import StorageUnavailable
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `grsai-relay` console script."""
    ns = parser().parse_args(argv)
    if ns.command == "simulator":
        run_simulator(ns.host, ns.port, SimulatorConfig.from_cli(ns))
        return 0
    try:
        settings = Settings()
    except ValidationError as exc:
        doctor = ns.command == "doctor"  # a check like the others: on stdout, exit 1
        for line in settings_problems(exc):
            print(
                f"FAIL settings: {line}" if doctor else line,
                file=sys.stdout if doctor else sys.stderr,
            )
        return 1 if doctor else 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return _run(settings, ns)
    except (StorageUnavailable, CannotListen) as exc:
        print(f"grsai-relay: {exc}", file=sys.stderr)
        return 1
    except CommandFailed as exc:
        print(f"grsai-relay: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _remote(settings: Settings, ns: argparse.Namespace) -> int:
    """`submit` and `tasks watch`: the relay's URL and key, then the command."""
    url = remote.relay_url(ns.url, os.environ, settings)
    key = remote.api_key(ns.key, os.environ, settings)
    command = remote.submit if ns.command == "submit" else remote.watch
    return asyncio.run(command(ns, url, key, remote.Console()))


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
    if ns.command == "submit" or getattr(ns, "tasks_command", None) == "watch":
        return _remote(settings, ns)
    if ns.command == "doctor":
        from service.cli.doctor import doctor

        url = remote.relay_url(ns.url, os.environ, settings)
        return asyncio.run(doctor(settings, url, ns.min_free_mb, sys.stdout))
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
