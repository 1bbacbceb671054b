"""The benchmark's scenarios, each against servers it starts and stops itself."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchlib import procs
from benchlib.load import Generator, LoadResult
from benchlib.plan import Plan, PlanTask
from benchlib.probes import RssSampler, count_rows, outcomes
from benchlib.report import Results, Run
from benchlib.seed import Seeded, api_key_id, bench_task, file_bytes, sample, seed

SUBMIT_INPUT = {
    "model": "nano-banana-pro",
    # [sim:drop]: the simulator sends no callbacks for these tasks (callbacks are measured
    # on their own); the relay passes the prompt on unchanged.
    "prompt": "benchmark: a lighthouse at dusk [sim:drop]",
    "aspectRatio": "16:9",
}
LOOKUP_SAMPLE = 100_000  # ids a lookup run draws from at random (spread over the whole table)
FINAL_EVERY = 16
MIX = (1, 5, 4)  # submits, callbacks, lookups in every 10 requests of the mixed run


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


class Bench:
    """Runs the scenarios in order and collects their results."""

    def __init__(self, cfg: Config, gen: Generator, workdir: Path, results: Results) -> None:
        self.cfg = cfg
        self.gen = gen
        self.workdir = workdir
        self.results = results
        self.key = ""
        self.small: Seeded | None = None
        self.seeded: dict[int, Seeded] = {}
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
    def relay(self, db: Path, sim: procs.Server, **env: str) -> Iterator[procs.Server]:
        """A relay on `db` for the duration of the block."""
        server = procs.relay(self.workdir, db, sim.url, **env)
        try:
            yield server
        finally:
            server.stop()

    def copy_db(self, source: Path, name: str) -> Path:
        """A private copy of a seeded database."""
        target = self.workdir / name
        shutil.copyfile(source, target)
        return target

    def add(
        self,
        key: str,
        title: str,
        result: LoadResult,
        *,
        tasks: int | None = None,
        ceiling: str | None = None,
        extra: dict[str, object] | None = None,
    ) -> Run:
        """Record a run."""
        run = Run(key, title, result, tasks, ceiling, extra or {})
        self.results.runs.append(run)
        print(
            f"bench: {title}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms,"
            f" p99 {result.p99_ms:.1f} ms, {result.ok}/{result.requests} ok",
            flush=True,
        )
        return run

    # --- setup --------------------------------------------------------------------------

    def ceilings(self, baseline: procs.Server) -> None:
        """The ceilings of this stack: `hello` and `post_noop` on the baseline app."""
        hello = Plan("fixed", "GET", "/hello")
        noop = Plan("fixed", "POST", "/post_noop", {"Content-Type": "application/json"})
        noop.body = noop_body()
        for key, plan in (("hello", hello), ("post_noop", noop)):
            result = self.measure(baseline.url, plan)
            self.results.ceilings.setdefault(key, []).append(result)
            print(f"bench: ceiling {key}: {result.rps:,.0f} req/s", flush=True)

    def seed_all(self) -> None:
        """A migrated database with one API key, then one seeded copy per task count."""
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
            self.results.seeding.append(
                {"tasks": size, "seconds": round(done.seconds, 2), "bytes": done.bytes}
            )
            self.results.storage[f"seeded database bytes per task ({size:,} tasks)"] = (
                done.bytes_per_task
            )
        self.small = self.seeded[min(self.seeded)]

    def task_slices(self) -> tuple[list[PlanTask], list[PlanTask]]:
        """Tasks for warm-up and tasks for measuring, disjoint (a callback is never repeated)."""
        assert self.small is not None
        count = self.small.tasks
        cut = max(1, min(1000, count // 10))
        return [bench_task(i) for i in range(cut)], [bench_task(i) for i in range(cut, count)]

    # --- scenarios ----------------------------------------------------------------------

    def callbacks(self, sim: procs.Server, synchronous: str) -> None:
        """(1) GrsAI callbacks for existing tasks through the full path."""
        assert self.small is not None
        db = self.copy_db(self.small.path, f"callbacks-{synchronous}.db")
        warm, tasks = self.task_slices()
        env = {"SQLITE_SYNCHRONOUS": synchronous, "VERIFY_CALLBACKS": "false"}
        with self.relay(db, sim, **env) as relay:
            self.warm_up(relay.url, Plan("callback", final_every=FINAL_EVERY, tasks=warm))
            before = outcomes(db)
            plan = Plan("callback", final_every=FINAL_EVERY, tasks=tasks)
            result = self.measure(relay.url, plan, warm=False)
        after = outcomes(db)
        measured = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        self.add(
            f"callbacks_{synchronous.lower()}",
            f"callbacks, SQLITE_SYNCHRONOUS={synchronous}",
            result,
            tasks=self.small.tasks,
            ceiling="post_noop",
            extra={"outcomes": measured},
        )
        events = sum(after.values())
        if synchronous == "NORMAL" and events:
            grown = file_bytes(db) - self.small.bytes
            self.results.storage["database bytes per stored callback"] = grown / events

    def lookups(self, sim: procs.Server) -> None:
        """(2) GET /v1/tasks/{id} for random ids, per database size."""
        for size, seeded in sorted(self.seeded.items()):
            db = seeded.path
            if size == min(self.seeded):
                db = self.copy_db(seeded.path, f"lookups-{size}.db")
            plan = Plan("lookup", key=self.key, tasks=sample(size, LOOKUP_SAMPLE))
            with self.relay(db, sim) as relay:
                self.results.memory[f"lookups {size:,} tasks: idle after start"] = relay.rss()
                result = self.measure(relay.url, plan)
                self.results.memory[f"lookups {size:,} tasks: after the run"] = relay.rss()
            self.add(f"lookups_{size}", "GET /v1/tasks/{id}", result, tasks=size, ceiling="hello")

    def submissions(self, sim: procs.Server) -> None:
        """(3) POST /v1/tasks through the relay, against the same submit sent to the simulator."""
        assert self.small is not None
        db = self.copy_db(self.small.path, "submissions.db")
        relay_body = compact(SUBMIT_INPUT)
        with self.relay(db, sim) as relay:
            direct = Plan("fixed", "POST", "/v1/draw/nano-banana")
            direct.headers = {
                "Authorization": f"Bearer {procs.UPSTREAM_KEY}",
                "Content-Type": "application/json",
            }
            hook = f"{relay.url}/webhooks/grsai/{'x' * 43}"  # the shape the relay sends
            direct.body = compact({**SUBMIT_INPUT, "webHook": hook})
            via = Plan("fixed", "POST", "/v1/tasks", {"Content-Type": "application/json"})
            via.headers["Authorization"] = f"Bearer {self.key}"
            via.body = relay_body
            for conns in sorted({1, self.cfg.submit_connections}):
                sim.restart()
                got = self.measure(sim.url, direct, connections=conns)
                self.add(f"submit_direct_c{conns}", "submit straight to the simulator", got)
                sim.restart()
                got = self.measure(relay.url, via, connections=conns)
                self.add(
                    f"submit_relay_c{conns}",
                    "POST /v1/tasks via the relay",
                    got,
                    ceiling=f"submit_direct_c{conns}",
                )
        created = count_rows(db, "tasks") - self.small.tasks
        storage = self.results.storage
        if created > 0:
            storage["database bytes per submitted task"] = (
                file_bytes(db) - self.small.bytes
            ) / created
        per_callback = storage.get("database bytes per stored callback")
        if created > 0 and per_callback is not None:
            storage["database bytes per task over its life (submit + 4 callbacks)"] = (
                storage["database bytes per submitted task"] + 4 * per_callback
            )

    def mixed(self, sim: procs.Server) -> None:
        """(4) Submits, callbacks and lookups together."""
        assert self.small is not None
        db = self.copy_db(self.small.path, "mixed.db")
        warm, tasks = self.task_slices()
        sim.restart()
        with self.relay(db, sim, VERIFY_CALLBACKS="false") as relay:
            result = self.measure(
                relay.url, self.mixed_plan(tasks), warmup_plan=self.mixed_plan(warm)
            )
        title = "mixed: 10% submit, 50% callback, 40% lookup"
        self.add("mixed", title, result, tasks=self.small.tasks, ceiling="post_noop")

    def mixed_plan(self, tasks: list[PlanTask]) -> Plan:
        """The mixed workload over `tasks`."""
        return Plan(
            "mixed",
            key=self.key,
            submit_body=compact(SUBMIT_INPUT),
            final_every=FINAL_EVERY,
            weights=MIX,
            tasks=tasks,
        )

    def soak(self, sim: procs.Server) -> None:
        """(5) RSS before and after sustained mixed load."""
        assert self.small is not None
        db = self.copy_db(self.small.path, "soak.db")
        warm, tasks = self.task_slices()
        sim.restart()
        mem = self.results.memory
        with self.relay(db, sim, VERIFY_CALLBACKS="false") as relay:
            mem["soak: idle after start"] = relay.rss()
            self.warm_up(relay.url, self.mixed_plan(warm))
            mem["soak: before (after the warm-up)"] = before = relay.rss()
            with RssSampler(relay.pid, every=1.0) as sampler:
                plan = self.plan(self.mixed_plan(tasks))
                result = self.gen.run(relay.url, plan, self.cfg.connections, self.cfg.soak)
            mem["soak: after"] = after = relay.rss()
            mem["soak: highest sampled"] = max(sampler.peak, after)
            mem["soak: growth"] = after - before
        self.add(
            "soak",
            f"soak: mixed load for {self.cfg.soak:g} s",
            result,
            tasks=self.small.tasks,
            ceiling="post_noop",
        )
