"""Request plans: what a load generator sends, written once and read by wrk's Lua or Python.

A plan file holds one tab-separated directive a line (see `scripts/bench_load.lua`, which
builds the same requests from it). `RequestMaker` is the Python twin of that script, used by
the fallback generator; the two must produce the same sequence for one thread.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

Request = tuple[str, str, dict[str, str], bytes | None]
FILES = "http://127.0.0.1:9"  # a final callback's result files, unless a plan says otherwise


@dataclass(frozen=True, slots=True)
class PlanTask:
    """A seeded task as the load generator needs it."""

    id: str
    token: str
    upstream_id: str


@dataclass
class Plan:
    """One load run's requests, by mode: fixed, callback, lookup or mixed."""

    mode: str
    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    key: str = ""
    submit_body: str = ""
    final_every: int = 0
    weights: tuple[int, int, int] = (0, 1, 0)
    files: str = FILES  # where a final callback's result file is (the simulator's base URL)
    tasks: list[PlanTask] = field(default_factory=list)

    def write(self, path: Path) -> Path:
        """Write the plan file; return its path."""
        lines = [f"mode\t{self.mode}", f"method\t{self.method}", f"path\t{self.path}"]
        lines += [f"header\t{name}\t{value}" for name, value in self.headers.items()]
        if self.body is not None:
            lines.append(f"body\t{self.body}")
        if self.key:
            lines.append(f"key\t{self.key}")
        if self.submit_body:
            lines.append(f"submit_body\t{self.submit_body}")
        lines.append(f"final_every\t{self.final_every}")
        lines.append(f"files\t{self.files}")
        lines.append("weights\t" + "\t".join(str(w) for w in self.weights))
        lines += [f"task\t{t.id}\t{t.token}\t{t.upstream_id}" for t in self.tasks]
        if any("\n" in line or "\r" in line for line in lines):
            raise ValueError("plan values must not contain line breaks")
        path.write_text("\n".join(lines) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> Plan:
        """Read a plan file written by `write`."""
        plan = cls(mode="fixed")
        for line in path.read_text().splitlines():
            name, *values = line.split("\t")
            if name == "task":
                plan.tasks.append(PlanTask(values[0], values[1], values[2]))
            elif name == "header":
                plan.headers[values[0]] = values[1]
            elif name == "weights":
                plan.weights = (int(values[0]), int(values[1]), int(values[2]))
            elif name == "final_every":
                plan.final_every = int(values[0])
            elif name in ("mode", "method", "path", "body", "key", "submit_body", "files"):
                setattr(plan, name, values[0])
        return plan


def callback_body(task: PlanTask, final: bool, progress: int, files: str = FILES) -> str:
    """A GrsAI callback body: running with `progress`, or a succeeded final with one result.

    The result is where the simulator serves it (`{files}/files/{GrsAI id}/0.png`), so a
    verification poll confirms the final and the relay can copy the file.
    """
    if final:
        return (
            f'{{"id":"{task.upstream_id}","status":"succeeded","progress":100,'
            f'"results":[{{"url":"{files}/files/{task.upstream_id}/0.png",'
            f'"content":"Here is the generated image."}}],"failure_reason":"","error":""}}'
        )
    return f'{{"id":"{task.upstream_id}","status":"running","progress":{progress}}}'


class RequestMaker:
    """Builds a plan's requests one after another, as `bench_load.lua` does for one thread."""

    def __init__(self, plan: Plan, *, tid: int = 0, nthreads: int = 1) -> None:
        self.plan = plan
        self.tid = tid
        self.nthreads = nthreads
        self.per_thread = max(1, len(plan.tasks) // nthreads)
        self.sent = 0
        self.sent_callbacks = 0
        self.rng = random.Random(1000 + tid)
        self._json = {"Content-Type": "application/json"}
        self._auth = {"Authorization": f"Bearer {plan.key}"}
        self._auth_json = {**self._auth, **self._json}

    def callback(self) -> Request:
        """The next unique callback: rising progress per task, finals for every Nth task."""
        k = self.sent_callbacks % self.per_thread
        round_ = self.sent_callbacks // self.per_thread
        self.sent_callbacks += 1
        index = k * self.nthreads + self.tid
        task = self.plan.tasks[index]
        every = self.plan.final_every
        final = every > 0 and index % every == every - 1 and round_ == 0
        body = callback_body(task, final, min(99, round_ + 1), self.plan.files)
        return "POST", f"/webhooks/grsai/{task.token}", self._json, body.encode()

    def lookup(self) -> Request:
        """GET a random task of the plan."""
        task = self.plan.tasks[self.rng.randrange(len(self.plan.tasks))]
        return "GET", f"/v1/tasks/{task.id}", self._auth, None

    def submit(self) -> Request:
        """POST /v1/tasks with the plan's body."""
        return "POST", "/v1/tasks", self._auth_json, self.plan.submit_body.encode()

    def next(self) -> Request:
        """The next request of the plan."""
        self.sent += 1
        mode = self.plan.mode
        if mode == "callback":
            return self.callback()
        if mode == "lookup":
            return self.lookup()
        if mode == "mixed":
            s, c, lk = self.plan.weights
            slot = (self.sent - 1) % (s + c + lk)
            if slot < s:
                return self.submit()
            return self.callback() if slot < s + c else self.lookup()
        body = self.plan.body.encode() if self.plan.body is not None else None
        return self.plan.method, self.plan.path, self.plan.headers, body
