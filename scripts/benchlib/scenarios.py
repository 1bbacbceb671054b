"""The benchmark's scenarios, each against servers it starts and stops itself."""

from __future__ import annotations

from benchlib import procs
from benchlib.databases import Database, SqliteDb
from benchlib.load import LoadResult
from benchlib.plan import Plan, PlanTask
from benchlib.probes import RssSampler
from benchlib.runner import FINAL_EVERY, Runner, compact
from benchlib.seed import sample

SUBMIT_INPUT = {
    "model": "nano-banana-pro",
    # [sim:drop]: the simulator sends no callbacks for these tasks (callbacks are measured
    # on their own); the relay passes the prompt on unchanged.
    "prompt": "benchmark: a lighthouse at dusk [sim:drop]",
    "aspectRatio": "16:9",
}
LOOKUP_SAMPLE = 100_000  # ids a lookup run draws from at random (spread over the whole table)
MIX = (1, 5, 4)  # submits, callbacks, lookups in every 10 requests of the mixed run
MIXED = "mixed: 10% submit, 50% callback, 40% lookup"


class Bench(Runner):
    """Runs the scenarios in order and collects their results."""

    def callbacks(self, sim: procs.Server, synchronous: str) -> None:
        """(1) GrsAI callbacks for existing tasks through the full path."""
        assert self.small is not None
        db = SqliteDb(self.copy_db(self.small.path, f"callbacks-{synchronous}.db"))
        env = {} if synchronous == "NORMAL" else {"SQLITE_SYNCHRONOUS": synchronous}
        result, measured = self.callbacks_on(db, sim, env)
        self.add(
            f"callbacks_{synchronous.lower()}",
            f"callbacks, SQLITE_SYNCHRONOUS={synchronous}",
            result,
            tasks=self.small.tasks,
            ceiling="post_noop",
            extra={"outcomes": measured, "simulator polls": self.polls},
            peer="peer_callbacks",
        )
        events = sum(db.outcomes().values())
        if synchronous == "NORMAL" and events:
            grown = db.size() - self.small.bytes
            self.results.storage["database bytes per stored callback"] = grown / events

    def callbacks_on(
        self, db: Database, sim: procs.Server, env: dict[str, str]
    ) -> tuple[LoadResult, dict[str, int]]:
        """Warm up, then measure unique callbacks on `db`; the result and the stored
        callbacks of the measured part by outcome."""
        warm, tasks = self.task_slices()
        with self.relay(db, sim, warm + tasks, **env) as relay:
            self.warm_up(relay.url, self.callback_plan(warm))
            before = db.outcomes()
            result = self.measure(relay.url, self.callback_plan(tasks), warm=False)
        after = db.outcomes()
        return result, {k: after.get(k, 0) - before.get(k, 0) for k in after}

    def peer_callbacks(self) -> None:
        """(1) The same callbacks to the naive peer, on a fresh copy of its database."""
        assert self.small is not None
        db = self.copy_db(self.naive_dbs[self.small.tasks], "naive-callbacks.db")
        warm, tasks = self.task_slices()
        with self.naive(db) as peer:
            self.warm_up(peer.url, self.callback_plan(warm))
            result = self.measure(peer.url, self.callback_plan(tasks), warm=False)
        title = "naive peer: callbacks"
        self.add("peer_callbacks", title, result, tasks=self.small.tasks, ceiling="post_noop")

    def lookups(self, sim: procs.Server) -> None:
        """(2) GET /v1/tasks/{id} for random ids, per database size, relay then naive peer."""
        for size, seeded in sorted(self.seeded.items()):
            db = SqliteDb(seeded.path)
            if size == min(self.seeded):
                db = SqliteDb(self.copy_db(seeded.path, f"lookups-{size}.db"))
            hit = sample(size, LOOKUP_SAMPLE)
            plan = Plan("lookup", key=self.key, tasks=hit)
            with self.relay(db, sim, hit) as relay:
                self.results.memory[f"lookups {size:,} tasks: idle after start"] = relay.rss()
                result = self.measure(relay.url, plan)
                self.results.memory[f"lookups {size:,} tasks: after the run"] = relay.rss()
            self.add(
                f"lookups_{size}",
                "GET /v1/tasks/{id}",
                result,
                tasks=size,
                ceiling="hello",
                extra={"simulator polls": self.polls},
                peer=f"peer_lookups_{size}",
            )
            with self.naive(self.naive_dbs[size]) as peer:
                result = self.measure(peer.url, plan)
            title = "naive peer: GET /v1/tasks/{id}"
            self.add(f"peer_lookups_{size}", title, result, tasks=size, ceiling="hello")

    def submit_plans(self, relay_url: str) -> tuple[Plan, Plan]:
        """The submit sent straight to the simulator, and through the relay at `relay_url`."""
        direct = Plan("fixed", "POST", "/v1/draw/nano-banana")
        direct.headers = {
            "Authorization": f"Bearer {procs.UPSTREAM_KEY}",
            "Content-Type": "application/json",
        }
        hook = f"{relay_url}/webhooks/grsai/{'x' * 43}"  # the shape the relay sends
        direct.body = compact({**SUBMIT_INPUT, "webHook": hook})
        via = Plan("fixed", "POST", "/v1/tasks", {"Content-Type": "application/json"})
        via.headers["Authorization"] = f"Bearer {self.key}"
        via.body = compact(SUBMIT_INPUT)
        return direct, via

    def submissions(self, sim: procs.Server) -> None:
        """(3) POST /v1/tasks through the relay, against the same submit sent to the simulator."""
        assert self.small is not None
        db = SqliteDb(self.copy_db(self.small.path, "submissions.db"))
        with self.relay(db, sim, [], **procs.SUBMITTING) as relay:
            direct, via = self.submit_plans(relay.url)
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
        created = db.count_rows("tasks") - self.small.tasks
        storage = self.results.storage
        if created > 0:
            storage["database bytes per submitted task"] = (db.size() - self.small.bytes) / created
        per_callback = storage.get("database bytes per stored callback")
        if created > 0 and per_callback is not None:
            storage["database bytes per task over its life (submit + 4 callbacks)"] = (
                storage["database bytes per submitted task"] + 4 * per_callback
            )

    def mixed(self, sim: procs.Server) -> None:
        """(4) Submits, callbacks and lookups together."""
        assert self.small is not None
        result = self.mixed_on(SqliteDb(self.copy_db(self.small.path, "mixed.db")), sim)
        extra: dict[str, object] = {"simulator polls": self.polls}
        self.add("mixed", MIXED, result, tasks=self.small.tasks, ceiling="post_noop", extra=extra)

    def mixed_on(self, db: Database, sim: procs.Server, **env: str) -> LoadResult:
        """The mixed run on `db`, after a fresh simulator start."""
        warm, tasks = self.task_slices()
        sim.restart()
        with self.relay(db, sim, warm + tasks, **procs.SUBMITTING, **env) as relay:
            return self.measure(
                relay.url, self.mixed_plan(tasks), warmup_plan=self.mixed_plan(warm)
            )

    def mixed_plan(self, tasks: list[PlanTask]) -> Plan:
        """The mixed workload over `tasks`."""
        return Plan(
            "mixed",
            key=self.key,
            submit_body=compact(SUBMIT_INPUT),
            final_every=FINAL_EVERY,
            weights=MIX,
            files=self.sim_url,
            tasks=tasks,
        )

    def soak(self, sim: procs.Server) -> None:
        """(5) RSS before and after sustained mixed load."""
        assert self.small is not None
        db = SqliteDb(self.copy_db(self.small.path, "soak.db"))
        warm, tasks = self.task_slices()
        sim.restart()
        mem = self.results.memory
        with self.relay(db, sim, warm + tasks, **procs.SUBMITTING) as relay:
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
            extra={"simulator polls": self.polls},
        )
