"""Group apply for PostgreSQL: concurrent `apply` calls share two statements per batch.

SQLite's writer commits many writes together; this does the same over the network. Queued
applies (each to a different task) are read in one statement with their row versions (`xmin`,
new with every update), decided in Python, and written in one statement that updates a task
and stores its event only where the version is still the one decided on, all committed at
once. An apply whose task changed meanwhile is queued again (then given to the locking
transaction if it keeps losing); one whose decision queues work (copies, an outbox event) or
changes a column outside `MUTABLE` is handed back for the locking transaction, untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.domain.records import Task
from service.domain.transitions import Decision
from service.storage.base import Event, seen_change
from service.storage.columns import FIELDS, SELECT_STATE, row_task
from service.storage.postgres.core import DRIVER_ERRORS, WORK_CHANNEL, Conn, no_nul, task_notices

# The columns a batched decision may change, with their array types for `unnest`.
MUTABLE = {
    "status": "text", "progress": "int4", "upstream_id": "text", "failure_reason": "text",
    "error": "text", "updated_at": "float8", "completed_at": "float8", "submit_state": "text",
    "last_event_at": "float8", "next_poll_at": "float8", "poll_attempts": "int4",
}  # fmt: skip
BATCH_MAX = 256
TRIES = 8  # version conflicts before an apply is given to the locking transaction
PARALLEL = 2  # batches in flight at once

READ = SELECT_STATE.replace("SELECT ", "SELECT xmin::text AS version, ", 1) + (
    " WHERE id = ANY($1::text[])"
)
_N = len(MUTABLE)
_SETS = ", ".join(f"{column} = i.{column}" for column in MUTABLE)
_EVENT_AT = _N + 4  # the first of the event arrays' parameters
WRITE = (
    "WITH i AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], "
    + ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(MUTABLE.values(), 4))
    + f") AS i(id, version, changed, {', '.join(MUTABLE)})),"
    f" upd AS (UPDATE tasks SET {_SETS} FROM i"
    " WHERE tasks.id = i.id AND i.changed AND tasks.xmin::text = i.version RETURNING tasks.id),"
    " ok AS (SELECT id FROM upd UNION ALL SELECT tasks.id FROM tasks JOIN i ON tasks.id = i.id"
    " WHERE NOT i.changed AND tasks.xmin::text = i.version),"
    " ev AS (INSERT INTO events (task_id, source, received_at, outcome, detail, body)"
    f" SELECT * FROM unnest(${_EVENT_AT}::text[], ${_EVENT_AT + 1}::text[],"
    f" ${_EVENT_AT + 2}::float8[], ${_EVENT_AT + 3}::text[], ${_EVENT_AT + 4}::text[],"
    f" ${_EVENT_AT + 5}::bytea[]) AS e(task_id, source, received_at, outcome, detail, body)"
    " WHERE e.task_id IN (SELECT id FROM ok)),"
    # live status: one notice per batch names the tasks whose change a client can see (a task
    # that lost its version check is named too: its watchers just look again)
    f" nt AS (SELECT pg_notify('{WORK_CHANNEL}', p) FROM unnest(${_EVENT_AT + 6}::text[]) AS p)"
    " SELECT id FROM ok UNION ALL SELECT NULL FROM nt"  # NULL rows: nt must run
)
_AT = {name: i for i, name in enumerate(FIELDS)}

# (done, decision): done=False hands the apply back for the locking transaction
Outcome = tuple[bool, Decision | None]


@dataclass(slots=True)
class _Apply:
    task_id: str
    decide: Callable[[Task], Decision]
    event: Event | None
    done: asyncio.Future[Outcome]
    tries: int = 0


@dataclass(slots=True)
class _Write:
    """The writes of one batch, as the columns of `WRITE`'s arrays."""

    ids: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    changed: list[bool] = field(default_factory=list)
    states: list[list[Any]] = field(default_factory=lambda: [[] for _ in MUTABLE])
    events: list[list[Any]] = field(default_factory=lambda: [[] for _ in range(6)])
    decisions: dict[str, tuple[_Apply, Decision]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)  # live status: ids whose change clients see

    def add(self, job: _Apply, row: Any, decision: Decision) -> None:
        self.ids.append(job.task_id)
        self.versions.append(row[0])
        self.changed.append(bool(decision.changes))
        for values, column in zip(self.states, MUTABLE, strict=True):
            values.append(no_nul(decision.changes.get(column, row[1 + _AT[column]])))
        if job.event is not None:
            event = job.event
            for values, value in zip(
                self.events,
                (event.task_id, event.source, event.received_at,
                 event.outcome or decision.outcome, event.detail or decision.detail, event.body),
                strict=True,
            ):  # fmt: skip
                values.append(no_nul(value))
        self.decisions[job.task_id] = (job, decision)
        if seen_change(decision.changes):
            self.seen.append(job.task_id)

    def arguments(self) -> list[Any]:
        notices = task_notices(self.seen)
        return [self.ids, self.versions, self.changed, *self.states, *self.events, notices]


class ApplyBatcher:
    """Queues applies and runs them in batches on connections from `acquire`."""

    def __init__(self, acquire: Callable[[], contextlib.AbstractAsyncContextManager[Conn]]):
        self._acquire = acquire
        self._queue: list[_Apply] = []
        self._flushing = 0

    async def apply(
        self, task_id: str, decide: Callable[[Task], Decision], event: Event | None
    ) -> Outcome:
        """Apply in the next batch; (False, None) means: take the locking transaction."""
        job = _Apply(task_id, decide, event, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._start()
        return await job.done

    def _start(self) -> None:
        if self._queue and self._flushing < PARALLEL:
            self._flushing += 1
            asyncio.get_running_loop().create_task(self._flush())

    def _take(self) -> list[_Apply]:
        """Up to BATCH_MAX queued applies to distinct tasks (the others wait their turn)."""
        taken: dict[str, _Apply] = {}
        left = []
        for job in self._queue:
            if job.task_id in taken or len(taken) >= BATCH_MAX:
                left.append(job)
            else:
                taken[job.task_id] = job
        self._queue = left
        return list(taken.values())

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # let this loop iteration's applies join the batch
            jobs = self._take()
            if jobs:
                await self._run(jobs)
        finally:
            self._flushing -= 1
            self._start()

    async def _run(self, jobs: list[_Apply]) -> None:
        try:
            async with self._acquire() as conn:
                rows = {r[1]: r for r in await conn.fetch(READ, [j.task_id for j in jobs])}
                write = self._decide(jobs, rows)
                written = (
                    {r[0] for r in await conn.fetch(WRITE, *write.arguments())}
                    if write.ids
                    else set()
                )
        except DRIVER_ERRORS:
            # One bad write fails its whole statement, and a lost connection every write in
            # it: each takes the locking transaction alone, which says which (nothing was
            # written, the statement being one transaction).
            for job in jobs:
                _settle(job, (False, None))
            return
        for task_id, (job, decision) in write.decisions.items():
            if task_id in written:
                _settle(job, (True, decision))
            elif job.tries >= TRIES:
                _settle(job, (False, None))
            else:  # the task changed since it was read: decide again on the new state
                self._queue.append(job)

    def _decide(self, jobs: list[_Apply], rows: dict[str, Any]) -> _Write:
        write = _Write()
        for job in jobs:
            job.tries += 1
            row = rows.get(job.task_id)
            if row is None:
                _settle(job, (True, None))
                continue
            try:
                decision = job.decide(row_task(row[1:]))
            except Exception as exc:  # the decision's own error is its caller's
                _settle(job, exc)
                continue
            queues = decision.copies or decision.final_event or decision.progress_event
            if queues or set(decision.changes) - MUTABLE.keys():
                _settle(job, (False, None))
            elif not decision.changes and job.event is None:
                _settle(job, (True, decision))
            else:
                write.add(job, row, decision)
        return write


def _settle(job: _Apply, result: Outcome | BaseException) -> None:
    if job.done.done():
        return
    if isinstance(result, BaseException):
        job.done.set_exception(result)
    else:
        job.done.set_result(result)
