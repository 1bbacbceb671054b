"""`apply` on PostgreSQL in two round trips for the common case.

Most observations (progress callbacks and polls, duplicates) change a few columns and store an
event, and queue nothing. For those: read the state with the row version (`xmin`, new with
every update of the row), decide, and write the changes and the event in one statement that
changes nothing unless the version is still the one decided on; if another writer got there
first, read and decide again. A decision that queues copies or a final event, or a row that
keeps changing under us, takes the locking transaction (`SELECT ... FOR UPDATE`) instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from service.domain.records import Task
from service.domain.transitions import Decision
from service.storage.base import Event
from service.storage.columns import JSON_COLUMNS, SELECT_STATE, checked_columns, encode_column
from service.storage.postgres.core import Conn

OPTIMISTIC_TRIES = 8  # then lock: a row this contended is better taken in turn
READ_VERSIONED = SELECT_STATE.replace("SELECT ", "SELECT xmin::text AS version, ", 1) + (
    " WHERE id = $1"
)
_EVENT_COLUMNS = "task_id, source, received_at, outcome, detail, body"


@functools.lru_cache(maxsize=256)
def _write_sql(columns: tuple[str, ...], with_event: bool) -> str:
    """One statement: update `columns` of task $1 if its version is still $2 (then store the
    event, whose values follow the columns'); returns a row only if it wrote."""
    checked_columns(columns)
    sets = ", ".join(f"{column} = ${i}" for i, column in enumerate(columns, 3))
    update = f"UPDATE tasks SET {sets} WHERE id = $1 AND xmin::text = $2 RETURNING 1"
    if not columns:
        update = "SELECT 1 FROM tasks WHERE id = $1 AND xmin::text = $2"
    if not with_event:
        return update
    first = len(columns) + 3
    values = ", ".join(f"${i}" for i in range(first, first + 6))
    return (
        f"WITH written AS ({update}) INSERT INTO events ({_EVENT_COLUMNS})"
        f" SELECT {values} WHERE EXISTS (SELECT 1 FROM written) RETURNING 1"
    )


def _event_values(event: Event, decision: Decision) -> tuple[Any, ...]:
    return (
        event.task_id,
        event.source,
        event.received_at,
        event.outcome or decision.outcome,
        event.detail or decision.detail,
        event.body,
    )


async def apply_optimistic(
    conn: Conn,
    task_id: str,
    decide: Callable[[Task], Decision],
    event: Event | None,
    row_task: Callable[[Any], Task],
) -> tuple[bool, Decision | None]:
    """(done, decision): done is False when the locking transaction must take over (the
    decision queues work, or the row kept changing); nothing was written then."""
    for _ in range(OPTIMISTIC_TRIES):
        row = await conn.fetchrow(READ_VERSIONED, task_id)
        if row is None:
            return True, None
        decision = decide(row_task(row[1:]))
        if decision.copies or decision.final_event is not None:
            return False, None
        if not decision.changes and event is None:
            return True, decision
        columns = tuple(decision.changes)
        values = [
            encode_column(c, v) if c in JSON_COLUMNS else v for c, v in decision.changes.items()
        ]
        if event is not None:
            values.extend(_event_values(event, decision))
        if await conn.fetch(_write_sql(columns, event is not None), task_id, row[0], *values):
            return True, decision
    return False, None
