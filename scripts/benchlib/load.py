"""Load generators in their own processes: wrk with `bench_load.lua`, or the Python fallback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess  # we start wrk, apt-get and our own generator
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchlib.procs import SCRIPTS, base_env, die_with_parent
from benchlib.pyload import GRACE

LUA = SCRIPTS / "bench_load.lua"
MARK = "BENCH_JSON "


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run measured (latencies in milliseconds)."""

    generator: str
    connections: int
    requests: int
    seconds: float
    status_errors: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> int:
        """Answers below 400."""
        return self.requests - self.status_errors

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, with req/s."""
        return {**asdict(self), "rps": round(self.rps, 1)}


def parse_summary(output: str, generator: str, connections: int) -> LoadResult:
    """Read the `BENCH_JSON {...}` line both generators print."""
    line = next((x for x in output.splitlines() if x.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"{generator} printed no summary:\n{output[-2000:]}")
    data = json.loads(line[len(MARK) :])
    errors, lat = data["errors"], data["latency_us"]
    return LoadResult(
        generator=generator,
        connections=connections,
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        status_errors=int(errors["status"]),
        socket_errors=sum(int(errors[k]) for k in ("connect", "read", "write", "timeout")),
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
    )


def find_wrk(install: bool) -> str | None:
    """The wrk binary: on PATH, else installed from Debian's packages if allowed and root."""
    found = shutil.which("wrk")
    if found or not install:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return None
    print("bench: wrk is missing; installing Debian's wrk package", file=sys.stderr)
    try:
        if not _apt(apt, "install", "-y", "wrk"):
            _apt(apt, "update")  # the package lists may be missing or stale
            _apt(apt, "install", "-y", "wrk")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return shutil.which("wrk")


def _apt(apt: str, *args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(  # noqa: S603  # apt-get with fixed arguments
        [apt, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    return done.returncode == 0


@dataclass(frozen=True, slots=True)
class Generator:
    """Runs plans against a URL: wrk when `wrk` is set, else the Python generator."""

    wrk: str | None
    threads: int = 2

    @property
    def name(self) -> str:
        """`wrk` or `python`."""
        return "wrk" if self.wrk else "python"

    def run(self, url: str, plan: Path, connections: int, duration: float) -> LoadResult:
        """Drive `plan` at `url` with `connections` connections for `duration` seconds."""
        if self.wrk:
            threads = max(1, min(self.threads, connections))
            argv = [
                self.wrk, "-t", str(threads), "-c", str(connections),
                "-d", f"{max(1, round(duration))}s", "--timeout", "5s",
                "-s", str(LUA), url, "--", str(plan), str(threads),
            ]  # fmt: skip
        else:
            argv = [
                sys.executable, "-m", "benchlib.pyload", "--url", url, "--plan", str(plan),
                "--connections", str(connections), "--duration", str(duration),
            ]  # fmt: skip
        done = subprocess.run(  # noqa: S603  # wrk or our own generator, fixed arguments
            argv,
            env=base_env({}),
            preexec_fn=die_with_parent,
            capture_output=True,
            check=False,
            timeout=duration + GRACE + 60,  # a hang guard; pyload may wait GRACE for answers
        )
        output = done.stdout.decode(errors="replace")
        if done.returncode != 0:
            raise RuntimeError(
                f"{self.name} exited {done.returncode}:\n{output}\n{done.stderr.decode()[-2000:]}"
            )
        return parse_summary(output, self.name, connections)
