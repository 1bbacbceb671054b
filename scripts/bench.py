"""Benchmark grsai-relay against the ceilings of its own stack, in one run on one machine.

    scripts/bench [--quick | --smoke] [--duration S] [--connections N] [--tasks 10k,1m]
                  [--out DIR] [--generator auto|wrk|python] [--keep] [--only LIST]
                  [--database postgresql://user@host:5432/postgres]

Starts, on 127.0.0.1 only: the GrsAI simulator, a stock Starlette app on stock
`uvicorn[standard]` (the `hello` and `post_noop` ceilings), the relay itself as a user runs it
(`python -m service serve`, default settings), once per scenario, and a naive receiver
(`scripts/bench_naive.py`) on the same plans for callbacks and lookups. Load comes from wrk in
another process (Debian's package, installed when missing and possible) with
`scripts/bench_load.lua`, or else from a Python generator in another process. Every run is
bounded in time. Results go to `<out>/<timestamp>.md` and `.json`; every figure is given as
req/s, p50, p99, as a ratio to its ceiling and, where there is one, to the naive peer, since
absolute numbers drift from machine to machine and run to run.

With `--database`, every relay scenario but the soak also runs on PostgreSQL (callbacks and
lookups with one relay process and with two), in databases the run makes on that server and
drops at the end (see `benchlib.pg`), each beside its SQLite run and compared with it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from benchlib import procs
from benchlib.about import machine, notes
from benchlib.load import Generator, find_wrk
from benchlib.pg import PgServer
from benchlib.pgscenarios import PgBench
from benchlib.report import Results
from benchlib.runner import FINAL_EVERY, Config
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
        "--database",
        metavar="URL",
        help="also run on PostgreSQL: a server URL (postgresql://user@host:5432/postgres) where"
        " the run may create and drop its own databases (grsai_bench_<pid>_*)",
    )
    top.add_argument(
        "--only",
        type=scenario_names,
        metavar="LIST",
        help=f"run only these scenarios (ceilings always run): {','.join(SCENARIOS)}",
    )
    return top


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
    workdir = Path(tempfile.mkdtemp(prefix="grsai-bench-"))
    pg = PgServer(ns.database, workdir) if ns.database else None
    try:
        pg_version = pg.version() if pg is not None else None
    except RuntimeError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"bench: {exc}", file=sys.stderr)
        return 2
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
            "postgresql": pg_version,
        },
        notes=notes(generator, cfg, pg_version),
    )
    clock = time.monotonic()
    try:
        run_all(PgBench(cfg, generator, workdir, results, pg), ns.only or frozenset(SCENARIOS))
    finally:
        if pg is not None:
            pg.drop_all()
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


def run_all(bench: PgBench, only: frozenset[str]) -> None:
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
        on_postgres: dict[str, Callable[[], None]] = {
            "callbacks": lambda: bench.pg_callbacks(sim),
            "lookups": lambda: bench.pg_lookups(sim),
            "submissions": lambda: bench.pg_submissions(sim),
            "mixed": lambda: bench.pg_mixed(sim),
        }
        for name in SCENARIOS:
            if name in only:
                scenarios[name]()
                if bench.pg is not None and name in on_postgres:
                    on_postgres[name]()
        bench.ceilings(baseline)
    finally:
        for stop in reversed(stack):
            stop()


if __name__ == "__main__":
    sys.exit(main())
