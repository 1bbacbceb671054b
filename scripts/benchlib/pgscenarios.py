"""The relay scenarios again on PostgreSQL (`--database`), each beside its SQLite run.

Callbacks and lookups run with one relay process and with `WORKERS=2`; submissions and the
mixed run with one. Each run gets a fresh copy of the PostgreSQL database seeded with the same
tasks as the SQLite file, and the same plans; its `versus` is the SQLite run it is compared
with. The soak (a memory figure of one process) runs on SQLite only.
"""

from __future__ import annotations

from benchlib import procs
from benchlib.plan import Plan
from benchlib.scenarios import LOOKUP_SAMPLE, MIXED, Bench
from benchlib.seed import sample

PG_WORKERS = (1, 2)  # relay processes in the PostgreSQL runs of callbacks and lookups


def pg_key(key: str, workers: int = 1) -> str:
    """The key of the PostgreSQL run of SQLite's `key`: `pg_<key>`, or `pg_w2_<key>`."""
    return f"pg_{key}" if workers == 1 else f"pg_w{workers}_{key}"


def pg_title(title: str, workers: int = 1) -> str:
    """The title of the PostgreSQL run of a SQLite run titled `title`."""
    return f"{title}, PostgreSQL" + ("" if workers == 1 else f", {workers} workers")


class PgBench(Bench):
    """The scenarios, and their PostgreSQL runs."""

    def pg_callbacks(self, sim: procs.Server) -> None:
        """(1) The callbacks on PostgreSQL."""
        assert self.small is not None
        for workers in PG_WORKERS:
            with self.pg_copy(self.small.tasks, f"callbacks_w{workers}") as db:
                result, measured = self.callbacks_on(db, sim, {"WORKERS": str(workers)})
            self.add(
                pg_key("callbacks_normal", workers),
                pg_title("callbacks", workers),
                result,
                tasks=self.small.tasks,
                ceiling="post_noop",
                extra={"outcomes": measured, "simulator polls": self.polls},
                versus="callbacks_normal",
            )

    def pg_lookups(self, sim: procs.Server) -> None:
        """(2) The lookups on PostgreSQL, per database size."""
        for size in sorted(self.pg_seeded):
            plan = Plan("lookup", key=self.key, tasks=sample(size, LOOKUP_SAMPLE))
            for workers in PG_WORKERS:
                with (
                    self.pg_copy(size, f"lookups_{size}_w{workers}") as db,
                    self.relay(db, sim, plan.tasks, WORKERS=str(workers)) as relay,
                ):
                    result = self.measure(relay.url, plan)
                self.add(
                    pg_key(f"lookups_{size}", workers),
                    pg_title("GET /v1/tasks/{id}", workers),
                    result,
                    tasks=size,
                    ceiling="hello",
                    extra={"simulator polls": self.polls},
                    versus=f"lookups_{size}",
                )

    def pg_submissions(self, sim: procs.Server) -> None:
        """(3) Submissions through the relay on PostgreSQL (the direct calls are SQLite's)."""
        assert self.small is not None
        with (
            self.pg_copy(self.small.tasks, "submissions") as db,
            self.relay(db, sim, [], **procs.SUBMITTING) as relay,
        ):
            _, via = self.submit_plans(relay.url)
            for conns in sorted({1, self.cfg.submit_connections}):
                sim.restart()
                got = self.measure(relay.url, via, connections=conns)
                self.add(
                    pg_key(f"submit_relay_c{conns}"),
                    pg_title("POST /v1/tasks via the relay"),
                    got,
                    ceiling=f"submit_direct_c{conns}",
                    versus=f"submit_relay_c{conns}",
                )

    def pg_mixed(self, sim: procs.Server) -> None:
        """(4) The mixed run on PostgreSQL."""
        assert self.small is not None
        with self.pg_copy(self.small.tasks, "mixed") as db:
            result = self.mixed_on(db, sim)
        self.add(
            pg_key("mixed"),
            pg_title(MIXED),
            result,
            tasks=self.small.tasks,
            ceiling="post_noop",
            extra={"simulator polls": self.polls},
            versus="mixed",
        )
