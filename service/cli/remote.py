"""`submit` and `tasks watch`: talk to a running relay over its HTTP API.

Where the relay is: `--url`, else env `RELAY_URL`, else `http://127.0.0.1:PORT`. The key:
`--key`, else env `RELAY_API_KEY`, else (demo mode) the demo key file the relay keeps.
Exit codes: 0 the task succeeded, 1 it failed, 2 a usage or HTTP problem (one line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from service.cli.client import CommandFailed, RelayClient
from service.cli.demo import demo_key_file
from service.cli.follow import follow
from service.cli.progress import Progress
from service.cli.saving import save_results
from service.domain.credentials import api_key_well_formed
from service.settings import Settings

SUCCEEDED, TASK_FAILED = 0, 1
OWN_FIELDS = ("model", "prompt", "metadata")


def param_value(text: str) -> Any:
    """A `--param` value: JSON when it parses as JSON (numbers, booleans, lists), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def task_body(
    model: str,
    prompt: str,
    params: list[tuple[str, str]],
    metadata: list[tuple[str, str]],
) -> dict[str, Any]:
    """The POST /v1/tasks body: `--param` values decoded, `--metadata` values kept as text."""
    body: dict[str, Any] = {"model": model, "prompt": prompt}
    for name, raw in params:
        if name in OWN_FIELDS:
            raise CommandFailed(f"--param {name}: give it as --{name}")
        if name in body:
            raise CommandFailed(f"--param {name} is given twice")
        body[name] = param_value(raw)
    if metadata:
        labels: dict[str, str] = {}
        for name, value in metadata:
            if name in labels:
                raise CommandFailed(f"--metadata {name} is given twice")
            labels[name] = value
        body["metadata"] = labels
    return body


def relay_url(flag: str | None, environ: Mapping[str, str], settings: Settings) -> str:
    """`--url`, else `RELAY_URL`, else this machine's relay on `PORT`."""
    url = flag or environ.get("RELAY_URL") or f"http://127.0.0.1:{settings.port}"
    if not url.startswith(("http://", "https://")):
        raise CommandFailed(f"relay URL {url!r}: expected http(s)://host:port")
    return url.rstrip("/")


def api_key(flag: str | None, environ: Mapping[str, str], settings: Settings) -> str:
    """`--key`, else `RELAY_API_KEY`, else (demo mode) the saved demo key."""
    key = flag or environ.get("RELAY_API_KEY")
    if key:
        return key.strip()
    if settings.demo_mode:
        path = demo_key_file(settings)
        try:
            saved = path.read_text(encoding="utf-8").strip()
        except OSError:
            saved = ""
        if api_key_well_formed(saved):
            return saved
        raise CommandFailed(
            f"no API key: pass --key or set RELAY_API_KEY (the demo key file {path} is missing;"
            " start the relay once with `grsai-relay serve`)"
        )
    raise CommandFailed(
        "no API key: pass --key or set RELAY_API_KEY"
        " (create one with `grsai-relay keys create --name NAME`)"
    )


@dataclass
class Console:
    """Where a command writes: results on `out`, progress and messages on `err`."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], float] = time.monotonic
    columns: Callable[[], int] = lambda: shutil.get_terminal_size().columns
    token: Callable[[], str] = lambda: secrets.token_urlsafe(18)


async def submit(
    ns: argparse.Namespace,
    url: str,
    key: str,
    console: Console,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """`grsai-relay submit`: print the task id; with --wait follow it to the end."""
    body = task_body(ns.model, ns.prompt, ns.param or [], ns.metadata or [])
    async with RelayClient(url, key, transport=transport) as client:
        task = await client.submit(body, idempotency_key=f"cli-{console.token()}")
        print(task["id"], file=console.out, flush=True)
        if not ns.wait and ns.out is None:
            return SUCCEEDED
        return await _follow_and_finish(client, task["id"], ns.out, ns.timeout, console)


async def watch(
    ns: argparse.Namespace,
    url: str,
    key: str,
    console: Console,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """`grsai-relay tasks watch ID`: follow one task to the end."""
    async with RelayClient(url, key, transport=transport) as client:
        return await _follow_and_finish(client, ns.task_id, ns.out, ns.timeout, console)


async def _follow_and_finish(
    client: RelayClient, task_id: str, out: Path | None, within: float | None, console: Console
) -> int:
    progress = Progress(console.err, console.clock, columns=console.columns)
    try:
        async with asyncio.timeout(within):
            task = await follow(client, task_id, progress)
    except TimeoutError as exc:
        progress.end()
        raise CommandFailed(
            f"{task_id} is not done after {within:g} s; follow it with"
            f" `grsai-relay tasks watch {task_id}`"
        ) from exc
    progress.end()
    if task.get("status") != "succeeded":
        reason = task.get("failure_reason") or "error"
        error = task.get("error")
        print(f"{task_id} failed: {reason}" + (f": {error}" if error else ""), file=console.err)
        return TASK_FAILED
    for entry in task.get("results") or []:
        link = entry.get("url") or entry.get("upstream_url") if isinstance(entry, dict) else None
        if link:
            print(link if "://" in link else client.base_url + link, file=console.out)
    if out is not None:
        for path in await save_results(client, task, out):
            print(f"saved {path}", file=console.out)
    return SUCCEEDED
