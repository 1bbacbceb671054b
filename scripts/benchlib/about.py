"""What the benchmark's report says about where and how it ran."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess  # git and wrk for the report's header
from pathlib import Path
from typing import Any

from benchlib import procs
from benchlib.load import Generator
from benchlib.runner import Config


def machine(generator: Generator) -> dict[str, Any]:
    """What the report says about where it ran."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk_version = ""
    if generator.wrk:
        done = _quiet([generator.wrk, "--version"])
        wrk_version = done.split("[")[0].strip() if done else "wrk"
    commit = _quiet(["git", "-C", str(procs.ROOT), "rev-parse", "--short", "HEAD"]) or "unknown"
    if _quiet(["git", "-C", str(procs.ROOT), "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "generator": wrk_version or "Python generator (httpx)",
        "commit": commit,
    }


def _quiet(argv: list[str]) -> str:
    """A command's first output line, or '' when it fails."""
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return ""
    try:
        done = subprocess.run(  # noqa: S603  # git or wrk with fixed arguments
            argv, capture_output=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else ""


def notes(generator: Generator, cfg: Config, postgresql: str | None = None) -> list[str]:
    """What a reader must know to read the figures."""
    found = [
        "Ceilings (`hello`, `post_noop`) are measured at the start and at the end of the run;"
        " ratios use their mean, and the two measurements show the drift.",
        "The relay runs as `python -m service serve` with its default settings but for those"
        " listed at the top, logging to a file; a fresh copy of the seeded database per"
        " scenario. The simulator answers polls for every seeded task as GrsAI would (running,"
        " or succeeded with the result its final callback names), so verification polls and"
        " the poller get real answers. Before each relay starts, the tasks the run is about"
        " are made due for a poll within the default callback silence window (as if each had"
        " news in the last minute), so the poller polls those that stay silent; the other"
        " seeded tasks are not due. `simulator polls` in the JSON counts the polls per run.",
        "Callbacks: each request is a unique body for a seeded running task, progress rising"
        " by round; one task in 16 gets a `succeeded` final as its first callback (verified by"
        " a poll, its result file then copied), and any later `running` callback to it is a"
        " late one (stored, outcome `stale`). Outcomes are counted in the database after each"
        " run.",
        "Lookups draw ids at random from up to 100,000 tasks spread over the whole table.",
        "The naive peer gets the same plans right after the relay (callbacks: a fresh copy of"
        " its database seeded with the same tasks; lookups: its database of the same size)."
        " It neither verifies, nor polls, nor copies results, nor logs requests.",
        "Submissions use the prompt directive `[sim:drop]` so the simulator sends no callbacks;"
        " the direct run sends the simulator exactly what the relay sends it (with webHook)."
        " The simulator keeps every task in memory, so it is restarted before each run that"
        " submits (its growing heap would otherwise slow later runs down).",
        (
            f"Load generator: wrk with {generator.threads} threads, on the same cores as the"
            " servers."
            if generator.wrk
            else "Load generator: the Python fallback. It saturates long before the servers do,"
            " so absolute figures are floors and ratios come out closer to 1 than they are."
        ),
        f"The submit runs use 1 and {cfg.submit_connections} connections; the target on"
        " added latency is judged at 1 connection.",
    ]
    if postgresql is not None:
        found.append(
            f"PostgreSQL {postgresql} (`--database`), on the same machine and cores: each relay"
            " run on it gets a fresh copy (`CREATE DATABASE ... TEMPLATE`) of a database seeded"
            " through PostgreSQL with the same tasks and API key as the SQLite file, and the same"
            " plans; `x SQLite` compares it with the SQLite run of the same plan (callbacks: with"
            " SQLITE_SYNCHRONOUS=NORMAL). Callbacks and lookups also run with `WORKERS=2` (two"
            " relay processes on one port). The soak runs on SQLite only."
        )
    return found
