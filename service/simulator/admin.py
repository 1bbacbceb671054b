"""Test and admin endpoints under `/_sim` (not part of GrsAI): the truth behind the API."""

from __future__ import annotations

from collections import Counter

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from service.simulator.engine import Simulator
from service.simulator.errors import TaskNotFound
from service.simulator.render import task_object
from service.simulator.state import JSONObject, SimTask


def task_report(task: SimTask) -> JSONObject:
    """The true task object, the faults applied and every callback sent."""
    return {
        "task": task_object(task),
        "model": task.model.name,
        "mode": task.mode,
        "webhook": task.webhook,
        "shut_progress": task.shut_progress,
        "submitted_at": task.submitted_at,
        "ended_at": task.ended_at,
        "faults": task.faults.to_json(),
        "submit_fault": task.submit_fault,
        "polls": task.polls,
        "poll_faults": list(task.poll_faults),
        "poll_fault_counts": dict(Counter(task.poll_faults)),
        "callbacks": [c.to_json() for c in task.callbacks],
    }


class AdminEndpoints:
    """`/_sim` handlers bound to one `Simulator`."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[BaseRoute]:
        """Every admin route."""
        return [
            Route("/_sim/stats", self.stats, methods=["GET"]),
            Route("/_sim/tasks", self.all_tasks, methods=["GET"]),
            Route("/_sim/tasks/{task_id}", self.task, methods=["GET"]),
            Route("/_sim/tasks/{task_id}/complete", self.complete, methods=["POST"]),
        ]

    async def stats(self, request: Request) -> Response:
        """`GET /_sim/stats`: counters, and how many tasks or callback senders are still busy."""
        busy = self.sim.busy
        return JSONResponse({**self.sim.stats.to_json(), "idle": not busy, "busy": busy})

    async def all_tasks(self, request: Request) -> Response:
        """`GET /_sim/tasks`: every task's report, oldest first (`?ids=1`: only the ids)."""
        if request.query_params.get("ids") == "1":
            return JSONResponse({"ids": list(self.sim.tasks)})
        return JSONResponse({"tasks": [task_report(t) for t in self.sim.tasks.values()]})

    async def task(self, request: Request) -> Response:
        """`GET /_sim/tasks/{id}`: the task report (code -22 body, HTTP 404 if unknown)."""
        task = self.sim.tasks.get(request.path_params["task_id"])
        if task is None:
            return _not_found()
        return JSONResponse(task_report(task))

    async def complete(self, request: Request) -> Response:
        """`POST /_sim/tasks/{id}/complete`: skip the remaining waits so the task ends now."""
        try:
            task = self.sim.hurry(request.path_params["task_id"])
        except TaskNotFound:
            return _not_found()
        return JSONResponse(task_report(task))


def _not_found() -> Response:
    return JSONResponse({"code": -22, "msg": "task not found", "data": None}, status_code=404)
