"""The GrsAI simulator for the benchmark: `grsai-relay simulator` without the access log, and
knowing every seeded task.

    python -m benchlib.simulator --port 8001 --api-key sk-... [--final-every 16]

Tasks progress once an hour, so the simulator sends no callbacks during a run (the benchmark
sends its own, measured ones), and it logs warnings only, so that logging every submit does
not take CPU from the relay on the same machine.

The seeded tasks were never submitted to it, yet the relay runs with its defaults: it polls
tasks that stay silent and verifies final callbacks by a poll. So the simulator answers for
any seeded GrsAI id (it carries the task's index, see `benchlib.seed`) as GrsAI would: every
`final_every`-th task (the ones the load sends a `succeeded` final for) has succeeded with
exactly the result that final names, served under `/files/`; every other one is running.
These answers are made on each request and kept nowhere, so a million seeded tasks cost no
memory.
"""

from __future__ import annotations

import argparse

from starlette.applications import Starlette

from benchlib.seed import MODEL, bench_index
from service.simulator import Simulator, SimulatorConfig, simulator_server
from service.simulator.catalog import find_model
from service.simulator.faults import Faults
from service.simulator.state import ResultFile, SimTask


class SeededTasks(dict[str, SimTask]):
    """The simulator's task table, answering `get` for seeded GrsAI ids too."""

    def __init__(self, base_url: str, final_every: int, started: float) -> None:
        super().__init__()
        self.base_url = base_url
        self.final_every = final_every
        self.started = started

    def get(self, key: str, default: SimTask | None = None) -> SimTask | None:  # type: ignore[override]  # dict.get's overloads
        """A submitted task, else a seeded one made up for this request, else `default`."""
        found = super().get(key)
        if found is not None:
            return found
        index = bench_index(key)
        return default if index is None else self.seeded(key, index)

    def seeded(self, upstream_id: str, index: int) -> SimTask:
        """Seeded task number `index` as GrsAI would show it now."""
        model = find_model(MODEL)
        assert model is not None
        every = self.final_every
        final = every > 0 and index % every == every - 1
        url = f"{self.base_url}/files/{upstream_id}/0.png"
        return SimTask(
            id=upstream_id,
            model=model,
            mode="callback",
            webhook=None,
            shut_progress=False,
            faults=Faults(),
            submitted_at=self.started - 60,
            files=(ResultFile(url=url, width=64, height=36, pid=f"s_bench{index}"),),
            status="succeeded" if final else "running",
            progress=100 if final else 0,
            ended_at=self.started if final else None,
        )


def main() -> None:
    """Serve the simulator on 127.0.0.1 until interrupted."""
    top = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    top.add_argument("--port", type=int, required=True)
    top.add_argument("--api-key", required=True)
    top.add_argument("--final-every", type=int, default=16)
    ns = top.parse_args()
    config = SimulatorConfig(api_key=ns.api_key, step_interval=3600.0)
    server = simulator_server("127.0.0.1", ns.port, config, log_level="warning")
    app = server.config.app
    assert isinstance(app, Starlette)
    sim: Simulator = app.state.simulator
    sim.tasks = SeededTasks(f"http://127.0.0.1:{ns.port}", ns.final_every, sim.clock.now())
    server.run()


if __name__ == "__main__":
    main()
