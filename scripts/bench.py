"""Benchmark grsai-relay against the ceilings of its own stack, in one run on one machine.

    scripts/bench [--quick | --smoke] [--duration S] [--connections N] [--tasks 10k,1m]
                  [--out DIR] [--generator auto|wrk|python] [--keep] [--only LIST]

Starts, on 127.0.0.1 only: the GrsAI simulator, a stock Starlette app on stock
`uvicorn[standard]` (the `hello` and `post_noop` ceilings), the relay itself as a user runs it
(`python -m service serve`, default settings), once per scenario, and a naive receiver
(`scripts/bench_naive.py`) on the same plans for callbacks and lookups. Load comes from wrk in
another process (Debian's package, installed when missing and possible) with
`scripts/bench_load.lua`, or else from a Python generator in another process. Every run is
bounded in time. Results go to `<out>/<timestamp>.md` and `.json`; every figure is given as
req/s, p50, p99, as a ratio to its ceiling and, where there is one, to the naive peer, since
absolute numbers drift from machine to machine and run to run.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess  # git and wrk for the report's header
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import procs
from benchlib.load import Generator, find_wrk
from benchlib.report import Results
from benchlib.runner import FINAL_EVERY, Config
from benchlib.scenarios import Bench
from benchlib.targets import evaluate

PRESETS = {
    # name: (duration, warm-up, soak, sizes)
    "default": (20.0, 2.0, 60.0, "10k,1m"),
    "quick": (5.0, 1.0, 20.0, "10k,100k"),
    "smoke": (1.0, 0.0, 2.0, "10k"),
}


def task_counts(text: str) -> list[int]:
    """`10k,1m` or `250000`: database sizes."""
    counts = []
    for part in text.split(","):
        found = re.fullmatch(r"(\d+)([km]?)", part.strip().lower())
        if found is None or int(found[1]) < 1:
            raise argparse.ArgumentTypeError(f"not a task count: {part!r} (e.g. 10k, 1m, 50000)")
        counts.append(int(found[1]) * {"": 1, "k": 1000, "m": 1_000_000}[found[2]])
    return counts


SCENARIOS = ("callbacks", "lookups", "submissions", "mixed", "soak")


def scenario_names(text: str) -> frozenset[str]:
    """`callbacks,lookups`: a subset of SCENARIOS."""
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - set(SCENARIOS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown) or '(none)'};"
            f" choose from {','.join(SCENARIOS)}"
        )
    return names


def seconds(text: str) -> float:
    """A positive number of seconds."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def positive(text: str) -> int:
    """A positive integer."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preset = top.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick", action="store_true", help="5 s runs, 20 s soak, 10k and 100k tasks"
    )
    preset.add_argument(
        "--smoke", action="store_true", help="1 s runs, no warm-up, 10k tasks only (tests)"
    )
    top.add_argument(
        "--duration", type=seconds, metavar="S", help="seconds per measured run (default 20)"
    )
    top.add_argument(
        "--soak", type=seconds, metavar="S", help="seconds of the memory soak (default 60)"
    )
    top.add_argument(
        "--connections", type=positive, default=64, metavar="N", help="concurrent connections"
    )
    top.add_argument(
        "--submit-connections",
        type=positive,
        default=16,
        metavar="N",
        help="connections of the busier submit run",
    )
    top.add_argument(
        "--tasks", type=task_counts, metavar="LIST", help="database sizes: 10k,1m (default)"
    )
    top.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        default=procs.ROOT / "bench-results",
        help="where <timestamp>.md and .json go (default: bench-results/)",
    )
    top.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk (installed if missing and possible), else Python",
    )
    top.add_argument("--keep", action="store_true", help="keep the work directory (databases)")
    top.add_argument(
        "--only",
        type=scenario_names,
        metavar="LIST",
        help=f"run only these scenarios (ceilings always run): {','.join(SCENARIOS)}",
    )
    return top


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


def notes(generator: Generator, cfg: Config) -> list[str]:
    """What a reader must know to read the figures."""
    return [
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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write the report; return 0."""
    ns = parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers we started are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    name = "smoke" if ns.smoke else "quick" if ns.quick else "default"
    duration, warmup, soak, sizes = PRESETS[name]
    cfg = Config(
        duration=ns.duration or duration,
        warmup=warmup,
        soak=ns.soak or soak,
        connections=ns.connections,
        submit_connections=ns.submit_connections,
        sizes=ns.tasks or task_counts(sizes),
    )
    wrk = None
    if ns.generator != "python":
        wrk = find_wrk(install=True)
        if wrk is None and ns.generator == "wrk":
            print("bench: wrk is not available", file=sys.stderr)
            return 2
        if wrk is None:
            print("bench: wrk unavailable, using the Python generator", file=sys.stderr)
    generator = Generator(wrk, threads=min(2, os.cpu_count() or 1))
    started = datetime.now(UTC)
    results = Results(
        started=started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        machine=machine(generator),
        settings={
            "preset": name,
            "duration": cfg.duration,
            "warmup": cfg.warmup,
            "soak": cfg.soak,
            "connections": cfg.connections,
            "submit_connections": cfg.submit_connections,
            "tasks": cfg.sizes,
            "relay_settings": procs.RELAY_SETTINGS,
        },
        notes=notes(generator, cfg),
    )
    workdir = Path(tempfile.mkdtemp(prefix="grsai-bench-"))
    clock = time.monotonic()
    try:
        run_all(Bench(cfg, generator, workdir, results), ns.only or frozenset(SCENARIOS))
    finally:
        if ns.keep:
            print(f"bench: work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results.targets = evaluate(results)
    results.finished = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    results.notes.append(f"Whole run: {time.monotonic() - clock:.0f} s.")
    md, js = results.write(ns.out, started.strftime("%Y%m%d-%H%M%S"))
    print(results.to_markdown())
    print(f"bench: wrote {md} and {js}")
    return 0


def run_all(bench: Bench, only: frozenset[str]) -> None:
    """The chosen scenarios in order; servers stopped whatever happens."""
    sim = procs.simulator(bench.workdir, FINAL_EVERY)
    bench.sim_url = sim.url
    stack: list[Callable[[], object]] = [sim.stop]
    try:
        baseline = procs.baseline(bench.workdir)
        stack.append(baseline.stop)
        bench.ceilings(baseline)
        bench.seed_all()

        def callbacks() -> None:
            bench.callbacks(sim, "NORMAL")
            bench.peer_callbacks()
            bench.callbacks(sim, "FULL")

        scenarios: dict[str, Callable[[], None]] = {
            "callbacks": callbacks,
            "lookups": lambda: bench.lookups(sim),
            "submissions": lambda: bench.submissions(sim),
            "mixed": lambda: bench.mixed(sim),
            "soak": lambda: bench.soak(sim),
        }
        for name in SCENARIOS:
            if name in only:
                scenarios[name]()
        bench.ceilings(baseline)
    finally:
        for stop in reversed(stack):
            stop()


if __name__ == "__main__":
    sys.exit(main())
