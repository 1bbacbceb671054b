"""The processes under test: the relay as a user runs it, the ceilings, the naive peer, and
the simulator."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess  # we start our own programs with fixed arguments
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
UPSTREAM_KEY = "sk-bench-upstream"


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (0 when unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


# Looked up once here, so that the child between fork and exec only makes the call.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the benchmark dies, so none outlives it."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def base_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without relay settings a user may have set, plus `extra`."""
    # settings a user may have set; WORKERS too: a relay runs one process unless a run asks
    own: tuple[str, ...] = ("GRSAI_", "PUBLIC_", "DATABASE_", "SQLITE_", "VERIFY_", "LOG_")
    own += ("SUBMIT_", "MIRROR_", "WORKERS")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(own)}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SCRIPTS), str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


@dataclass
class Server:
    """A server subprocess on 127.0.0.1 that we started and must stop."""

    name: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    health: str = "/healthz"
    proc: subprocess.Popen[bytes] | None = None
    processes: int = 1  # serving processes: with more, start waits for each to log its start

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where its output goes."""
        return self.workdir / f"{self.name}-{self.port}.log"

    def start(self, timeout: float = 30.0) -> Server:
        """Start it and wait until `health` answers (and, with several processes, until each
        has logged that its app started: one answering says nothing of the others)."""
        logged = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603  # our own interpreter and scripts
                [*self.argv, "--port", str(self.port)],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            try:
                answered = httpx.get(self.url + self.health, timeout=1.0).status_code < 500
                if answered and self._started(logged) >= self.processes:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.name} did not come up within {timeout} s")

    def _started(self, offset: int) -> int:
        """Processes that logged their app's start since `offset` in the log (1 if only one)."""
        if self.processes == 1:
            return 1
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().count(b"Application startup complete")

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        """Its resident set size in bytes."""
        return rss_bytes(self.pid)

    def restart(self) -> Server:
        """Stop, then start afresh on the same port."""
        self.stop()
        return self.start()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait (SIGKILL if it hangs); return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=10)


def cli(workdir: Path, env: dict[str, str], *args: str) -> str:
    """Run a `grsai-relay` subcommand (`python -m service ...`); return its stdout."""
    done = subprocess.run(  # noqa: S603  # our own CLI with fixed arguments
        [sys.executable, "-m", "service", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return done.stdout.decode()


# What the relay's environment sets, and why; everything else is left at its default.
RELAY_SETTINGS = {
    "GRSAI_API_KEY, GRSAI_BASE_URL": "the simulator plays GrsAI",
    "DATABASE_URL, ASSET_DIR, PUBLIC_BASE_URL": "the run's own files and address",
    "FETCH_ALLOW_NETWORKS=127.0.0.0/8": "result files are copied from the simulator on 127.0.0.1",
    "SUBMIT_RATE_PER_MINUTE=0": "in the runs that submit only: the one API key submits far more"
    " than the default 600 a minute, which would be answered 429",
    "SQLITE_SYNCHRONOUS=FULL": "in the FULL callbacks run only (the default is NORMAL)",
    "DATABASE_URL=postgresql://..., WORKERS=2": "in the PostgreSQL runs only (`--database`):"
    " a fresh copy of the seeded database per run; WORKERS=2 where a run says 2 workers",
}
SUBMITTING = {"SUBMIT_RATE_PER_MINUTE": "0"}


def relay_env(
    database_url: str, asset_dir: Path, simulator_url: str, port: int, **extra: str
) -> dict[str, str]:
    """The relay's settings for a benchmark run: its defaults, pointed at the simulator."""
    return base_env(
        {
            "GRSAI_API_KEY": UPSTREAM_KEY,
            "GRSAI_BASE_URL": simulator_url,
            "DATABASE_URL": database_url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
            "ASSET_DIR": str(asset_dir),
            **extra,
        }
    )


def relay(
    workdir: Path, database_url: str, asset_dir: Path, simulator_url: str, **extra: str
) -> Server:
    """The relay, started as a user would: `python -m service serve --port P` (WORKERS in
    `extra` for more than one process)."""
    port = free_port()
    env = relay_env(database_url, asset_dir, simulator_url, port, **extra)
    argv = [sys.executable, "-m", "service", "serve"]
    processes = int(extra.get("WORKERS", "1"))
    return Server("relay", argv, env, workdir, port=port, processes=processes).start()


def baseline(workdir: Path) -> Server:
    """The ceiling app (`scripts/bench_baseline.py`): stock Starlette on stock uvicorn."""
    argv = [sys.executable, str(SCRIPTS / "bench_baseline.py")]
    return Server("baseline", argv, base_env({}), workdir, health="/hello").start()


def naive(workdir: Path, db: Path, api_key: str) -> Server:
    """The naive peer (`scripts/bench_naive.py`) on `db`."""
    argv = [sys.executable, str(SCRIPTS / "bench_naive.py"), "--db", str(db), "--api-key", api_key]
    server = Server("naive", argv, base_env({}), workdir, health="/v1/tasks/-")
    return server.start()


def simulator(workdir: Path, final_every: int) -> Server:
    """The GrsAI simulator (`benchlib.simulator`): quiet, no callbacks mid-run, seeded tasks."""
    argv = [
        sys.executable, "-m", "benchlib.simulator", "--api-key", UPSTREAM_KEY,
        "--final-every", str(final_every),
    ]  # fmt: skip
    return Server("simulator", argv, base_env({}), workdir, health="/_sim/stats").start()


def simulator_polls(sim: Server) -> int:
    """How many polls the simulator has answered since it started (-1 when it cannot say)."""
    try:
        return int(httpx.get(sim.url + "/_sim/stats", timeout=10.0).json()["polls"])
    except (httpx.HTTPError, ValueError, KeyError):
        return -1
