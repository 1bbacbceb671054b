"""Real servers for end-to-end tests: the relay as a subprocess, the simulator in a thread.

Every relay a test starts uses the backend `RELAY_TEST_BACKEND` names, `sqlite` (the default) or
`postgresql` (`tests/e2e/backends.py`); `RelayProcess.query` reads either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from service.simulator import SimulatorConfig
from service.simulator.app import simulator_server
from tests import pgserver

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_KEY = "sk-e2e-upstream"


# Relay ports come from below the kernel's ephemeral range (32768-60999 on Linux), so no
# outgoing connection or bind(0) elsewhere can take one between our check and the relay's
# bind; each pytest-xdist worker has its own slice, so parallel tests never share one.
_PORT_SLICE = 1500
_PORT_BASE = 20000


def _port_candidates() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = _PORT_BASE + (int(worker) % 8 if worker.isdigit() else 0) * _PORT_SLICE
    start = os.getpid() % _PORT_SLICE  # another run on the machine starts elsewhere
    for n in itertools.count():
        yield first + (start + n) % _PORT_SLICE


_CANDIDATES = _port_candidates()


def free_port() -> int:
    """A port of this test worker's own slice that is free now on 127.0.0.1."""
    for port in itertools.islice(_CANDIDATES, _PORT_SLICE):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left in this worker's slice")


def wait_until_up(
    url: str, timeout: float = 120.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll `url` until it answers, or fail (with the process output if it died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} came up")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up within {timeout} s")


@dataclass
class SimulatorServer:
    """The GrsAI simulator served by uvicorn from a thread on 127.0.0.1."""

    config: SimulatorConfig
    port: int = 0
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SimulatorServer:
        """Start serving and wait until it answers."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = simulator_server("127.0.0.1", self.port, self.config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        wait_until_up(f"{self.url}/_sim/stats")
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)

    async def stats(self, client: httpx.AsyncClient) -> dict[str, Any]:
        """`GET /_sim/stats`."""
        stats: dict[str, Any] = (await client.get(f"{self.url}/_sim/stats")).json()
        return stats

    async def reports(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        """Every task's admin report (truth, faults, callbacks with receiver status)."""
        response = await client.get(f"{self.url}/_sim/tasks", timeout=60)
        reports: list[dict[str, Any]] = response.json()["tasks"]
        return reports

    async def task_ids(self, client: httpx.AsyncClient) -> list[str]:
        """The ids of every task the simulator holds, oldest first."""
        ids: list[str] = (await client.get(f"{self.url}/_sim/tasks?ids=1")).json()["ids"]
        return ids

    async def wait_idle(self, client: httpx.AsyncClient, within: float = 60.0) -> None:
        """Wait until no task runs and no callback is pending (the callback log is final)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not (stats := await self.stats(client))["idle"]:
            if loop.time() > deadline:
                raise AssertionError(f"simulator still busy after {within} s: {stats}")
            await asyncio.sleep(0.05)


STARTED: list[RelayProcess] = []  # every relay started, in order; `reap` kills the newest


def reap(keep: int) -> None:
    """SIGKILL the relays started after the first `keep` that still run (a test that failed
    before stopping its own; a module's shared relay started earlier is kept)."""
    while len(STARTED) > keep:
        STARTED.pop().kill()


@dataclass
class RelayProcess:
    """grsai-relay run exactly as a user runs it (`python -m service serve`), in a subprocess."""

    workdir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    serve_args: tuple[str, ...] = ()  # more options of `serve`, e.g. ("--tunnel", "cloudflared")

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRSAI_", "PUBLIC_"))}
        env.update(self.env)
        env.setdefault("PYTHONPATH", str(ROOT))
        return env

    def cli(self, *args: str) -> str:
        """Run a `grsai-relay` subcommand against the same settings; return its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "service", *args],
            cwd=self.workdir,
            env=self._env(),
            capture_output=True,
            check=True,
            timeout=60,
        )
        return done.stdout.decode()

    def create_key(self, name: str) -> str:
        """A new client API key."""
        return self.cli("keys", "create", "--name", name).splitlines()[0]

    def start(self) -> RelayProcess:
        """Start `serve` and wait for /healthz."""
        self.log_path = self.workdir / f"relay-{self.port}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(self.port), *self.serve_args],
            cwd=self.workdir,
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if not any(started is self for started in STARTED):  # a restart keeps its place
            STARTED.append(self)
        wait_until_up(f"{self.url}/healthz", proc=self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def logs(self) -> str:
        """Everything the process printed."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def restart(self) -> RelayProcess:
        """SIGKILL the running process (if any), then start a new one: same port, env, database."""
        self.kill()
        return self.start()

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`, from the relay's `DATABASE_URL`."""
        return "sqlite" if self.env["DATABASE_URL"].startswith("sqlite:") else "postgresql"

    @property
    def db_path(self) -> Path:
        """The SQLite file this relay uses (only SQLite has one)."""
        if self.backend != "sqlite":
            raise TypeError(
                "db_path: this relay runs on PostgreSQL; a test about the SQLite file"
                " must be marked sqlite_only"
            )
        return Path(self.env["DATABASE_URL"].removeprefix("sqlite:///"))

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only query (`?` placeholders) on the relay's database (it may be running).

        Either backend gives Python values: str, int, float, None, and bytes for BLOB/bytea.
        """
        if self.backend != "sqlite":
            return pgserver.fetch(self.env["DATABASE_URL"], sql, params)
        uri = f"file:{self.db_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            rows: list[tuple[Any, ...]] = db.execute(sql, params).fetchall()
        return rows


def truth_urls(task: dict[str, Any]) -> list[str]:
    """Result URLs of a simulator task object (results list, else top-level url)."""
    urls = [r["url"] for r in task.get("results") or [] if r.get("url")]
    return urls or ([task["url"]] if task.get("url") else [])


def relay_upstream_urls(results: list[dict[str, Any]]) -> list[str]:
    """GrsAI's URLs in a relay task's `results` (`upstream_url` once the relay copies files)."""
    return [r.get("upstream_url") or r["url"] for r in results]


def truth_outcome(task: dict[str, Any]) -> tuple[str, str | None]:
    """The (status, failure_reason) a relay must end with for a terminal simulator task."""
    if task["status"] == "succeeded":
        return "succeeded", None
    reason = task.get("failure_reason") or task.get("fail_reason")
    return "failed", reason or ("violation" if task["status"] == "violation" else "error")


def webhook_token_hash(webhook: str) -> bytes:
    """What the relay stores for the callback token at the end of a webHook URL."""
    return hashlib.sha256(webhook.rsplit("/", 1)[1].encode()).digest()


def relay_env(
    database_url: str, asset_dir: Path, simulator_url: str, *, public: bool, port: int, **extra: str
) -> dict[str, str]:
    """Settings for a relay under test: fast timers, the simulator as GrsAI."""
    env = {
        "GRSAI_API_KEY": UPSTREAM_KEY,
        "GRSAI_BASE_URL": simulator_url,
        "DATABASE_URL": database_url,
        "POLL_FIRST_DELAY": "0.1",
        "POLL_MAX_INTERVAL": "0.5",
        "POLLER_TICK": "0.05",
        "CALLBACK_SILENCE": "1.0",
        "NOT_FOUND_GRACE": "2.0",
        "LOG_LEVEL": "warning",
        "ASSET_DIR": str(asset_dir),
        "ASSET_TICK": "0.05",
        "ASSET_RETRY_DELAYS": "0.2,0.5,1",
        "FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8",
        "DELIVERY_TICK": "0.05",
        "SUBMIT_RATE_PER_MINUTE": "0",
    }
    if public:
        env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
    env.update(extra)
    return env
