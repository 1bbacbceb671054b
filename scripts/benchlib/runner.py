"""The plumbing of the benchmark's scenarios: servers started and stopped around each run,
plans written, load driven, databases seeded and copied, results recorded."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchlib import procs
from benchlib.databases import Database
from benchlib.load import Generator, LoadResult
from benchlib.pg import PgDb, PgServer
from benchlib.plan import Plan, PlanTask
from benchlib.report import Results, Run
from benchlib.seed import Seeded, api_key_id, bench_task, seed, seed_naive
from service.settings import Settings

FINAL_EVERY = 16  # every 16th task gets a `succeeded` final as its first callback
SILENCE = float(Settings.model_fields["callback_silence"].default)  # the relay's default


def compact(obj: object) -> str:
    """JSON without spaces."""
    return json.dumps(obj, separators=(",", ":"))


def noop_body() -> str:
    """A ~1 KB JSON object shaped like a GrsAI task object, for the `post_noop` ceiling."""
    obj = {
        "id": "16-18ce737e-9692-455d-89a9-be79f437c549",
        "status": "running",
        "progress": 42,
        "results": [{"url": f"https://file.example/{n:04d}/" + "a" * 120} for n in range(4)],
        "failure_reason": "",
        "error": "",
        "start_time": 1795641120,
        "end_time": 0,
        "callback_url": "https://relay.example/webhooks/grsai/" + "t" * 43,
        "metadata": {"order": 1234, "note": "n" * 180},
    }
    return compact(obj)


@dataclass
class Config:
    """How long and how hard to run."""

    duration: float
    warmup: float
    soak: float
    connections: int
    submit_connections: int
    sizes: list[int]


class Runner:
    """The plumbing under the scenarios: servers, plans, load runs, seeded databases."""

    def __init__(
        self,
        cfg: Config,
        gen: Generator,
        workdir: Path,
        results: Results,
        pg: PgServer | None = None,
    ) -> None:
        self.cfg = cfg
        self.gen = gen
        self.workdir = workdir
        self.results = results
        self.pg = pg  # the PostgreSQL server of `--database`, if any
        self.key = ""
        self.small: Seeded | None = None
        self.seeded: dict[int, Seeded] = {}
        self.pg_seeded: dict[int, PgDb] = {}
        self.naive_dbs: dict[int, Path] = {}
        self.sim_url = ""  # where the simulator serves result files (set by `run_all`)
        self.polls = 0  # polls the simulator answered during the last relay's life
        self._plans = 0

    # --- plumbing -----------------------------------------------------------------------

    def plan(self, plan: Plan) -> Path:
        """Write a plan file into the work directory."""
        self._plans += 1
        return plan.write(self.workdir / f"plan-{self._plans}-{plan.mode}.txt")

    def measure(
        self,
        url: str,
        plan: Plan,
        *,
        connections: int | None = None,
        duration: float | None = None,
        warmup_plan: Plan | None = None,
        warm: bool = True,
    ) -> LoadResult:
        """Warm up (with `warmup_plan`, else the same plan) unless told not to, then measure."""
        conns = connections or self.cfg.connections
        if warm:
            self.warm_up(url, warmup_plan or plan, conns)
        return self.gen.run(url, self.plan(plan), conns, duration or self.cfg.duration)

    def warm_up(self, url: str, plan: Plan, connections: int | None = None) -> None:
        """Run `plan` for the warm-up time, unmeasured."""
        if self.cfg.warmup > 0:
            conns = connections or self.cfg.connections
            self.gen.run(url, self.plan(plan), conns, self.cfg.warmup)

    @contextlib.contextmanager
    def relay(
        self, db: Database, sim: procs.Server, hit: list[PlanTask], **env: str
    ) -> Iterator[procs.Server]:
        """A relay on `db` for the duration of the block, the tasks it is sent about due
        for polls within the callback silence window (see `seed.reschedule`); counts the
        polls it makes into `self.polls`."""
        db.reschedule(hit, time.time(), SILENCE)
        before = procs.simulator_polls(sim)
        server = procs.relay(self.workdir, db.url, db.asset_dir, sim.url, **env)
        try:
            yield server
        finally:
            server.stop()
            self.polls = procs.simulator_polls(sim) - before

    @contextlib.contextmanager
    def naive(self, db: Path) -> Iterator[procs.Server]:
        """The naive peer on `db` for the duration of the block."""
        server = procs.naive(self.workdir, db, self.key)
        try:
            yield server
        finally:
            server.stop()

    def copy_db(self, source: Path, name: str) -> Path:
        """A private copy of a seeded database."""
        target = self.workdir / name
        shutil.copyfile(source, target)
        return target

    @contextlib.contextmanager
    def pg_copy(self, size: int, name: str) -> Iterator[PgDb]:
        """A fresh copy of the PostgreSQL database seeded with `size` tasks, for the block."""
        assert self.pg is not None
        with self.pg.copy(self.pg_seeded[size], name) as db:
            yield db

    def add(
        self,
        key: str,
        title: str,
        result: LoadResult,
        *,
        tasks: int | None = None,
        ceiling: str | None = None,
        extra: dict[str, object] | None = None,
        peer: str | None = None,
        versus: str | None = None,
    ) -> Run:
        """Record a run (`versus`: the key of the same plan's run on SQLite)."""
        run = Run(key, title, result, tasks, ceiling, extra or {}, peer, versus)
        self.results.runs.append(run)
        print(
            f"bench: {title}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms,"
            f" p99 {result.p99_ms:.1f} ms, {result.ok}/{result.requests} ok",
            flush=True,
        )
        return run

    # --- setup --------------------------------------------------------------------------

    def ceilings(self, baseline: procs.Server) -> None:
        """The ceilings: `hello` and `post_noop` on the stock baseline app."""
        hello = Plan("fixed", "GET", "/hello")
        noop = Plan("fixed", "POST", "/post_noop", {"Content-Type": "application/json"})
        noop.body = noop_body()
        for key, plan in (("hello", hello), ("post_noop", noop)):
            result = self.measure(baseline.url, plan)
            self.results.ceilings.setdefault(key, []).append(result)
            print(f"bench: ceiling {key}: {result.rps:,.0f} req/s", flush=True)

    def seed_all(self) -> None:
        """A migrated database with one API key, then one seeded copy per task count, and
        the naive peer's database with the same tasks per task count."""
        base = self.workdir / "base.db"
        env = procs.base_env({"DATABASE_URL": f"sqlite:///{base}"})
        procs.cli(self.workdir, env, "db", "migrate")
        self.key = procs.cli(self.workdir, env, "keys", "create", "--name", "bench").split()[0]
        owner = api_key_id(base)
        for size in sorted(set(self.cfg.sizes)):
            path = self.copy_db(base, f"seeded-{size}.db")
            print(f"bench: seeding {size:,} tasks", flush=True)
            done = seed(path, size, owner)
            self.seeded[size] = done
            naive = self.workdir / f"naive-{size}.db"
            naive_seconds = seed_naive(naive, size)
            self.naive_dbs[size] = naive
            self.results.seeding.append(
                {
                    "tasks": size,
                    "seconds": round(done.seconds, 2),
                    "bytes": done.bytes,
                    "naive_seconds": round(naive_seconds, 2),
                }
            )
            self.results.storage[f"seeded database bytes per task ({size:,} tasks)"] = (
                done.bytes_per_task
            )
        self.small = self.seeded[min(self.seeded)]
        if self.pg is not None:
            self.seed_pg(base, owner)

    def seed_pg(self, sqlite_base: Path, owner: str) -> None:
        """The same API key and tasks in one PostgreSQL database per task count, migrated by
        the relay and filled through PostgreSQL (see `benchlib.pg`)."""
        assert self.pg is not None
        base = self.pg.create("base")
        procs.cli(self.workdir, procs.base_env({"DATABASE_URL": base.url}), "db", "migrate")
        if base.copy_key(sqlite_base) != owner:
            raise RuntimeError("the PostgreSQL base did not get the SQLite base's API key")
        for size in sorted(set(self.cfg.sizes)):
            print(f"bench: seeding {size:,} tasks into PostgreSQL", flush=True)
            db = self.pg.create(f"seeded_{size}", template=base)
            seconds = db.seed(size, owner)
            self.pg_seeded[size] = db
            row = next(r for r in self.results.seeding if r["tasks"] == size)
            row.update(postgres_seconds=round(seconds, 2), postgres_bytes=db.size())
        self.pg.drop(base)

    def task_slices(self) -> tuple[list[PlanTask], list[PlanTask]]:
        """Tasks for warm-up and tasks for measuring, disjoint (a callback is never repeated).

        The cut is a multiple of FINAL_EVERY, so the tasks a plan sends finals for are the
        ones the simulator shows as succeeded."""
        assert self.small is not None
        count = self.small.tasks
        cut = max(FINAL_EVERY, min(1000, count // 10) // FINAL_EVERY * FINAL_EVERY)
        return [bench_task(i) for i in range(cut)], [bench_task(i) for i in range(cut, count)]

    def callback_plan(self, tasks: list[PlanTask]) -> Plan:
        """Unique callbacks to `tasks`, finals for every FINAL_EVERY-th."""
        return Plan("callback", final_every=FINAL_EVERY, files=self.sim_url, tasks=tasks)
