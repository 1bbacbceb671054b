"""How tasks and events are written to PostgreSQL rows (the layout is `service.storage.columns`)."""

from __future__ import annotations

import functools
from typing import Any

from service.domain.records import Task
from service.domain.transitions import Decision
from service.storage.base import Event
from service.storage.columns import (
    JSON_COLUMNS,
    TASK_COLUMNS,
    checked_columns,
    encode_column,
    row_task,
)
from service.storage.postgres.core import Conn

INSERT_TASK = (
    f"INSERT INTO tasks ({', '.join(TASK_COLUMNS)})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(TASK_COLUMNS) + 1))})"
    " ON CONFLICT (api_key_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
)


def task_values(task: Task) -> tuple[Any, ...]:
    """A task's values in `TASK_COLUMNS` order, as stored."""
    return tuple(encode_column(c, getattr(task, c)) for c in TASK_COLUMNS)


async def one_task(conn: Conn, sql: str, *args: Any) -> Task | None:
    """The task `sql` selects, or None."""
    row = await conn.fetchrow(sql, *args)
    return row_task(row) if row is not None else None


@functools.lru_cache(maxsize=256)
def _update_sql(columns: tuple[str, ...]) -> str:
    """`UPDATE tasks SET a = $1, b = $2 WHERE id = $3` for known columns."""
    checked_columns(columns)
    sets = ", ".join(f"{column} = ${i}" for i, column in enumerate(columns, 1))
    return f"UPDATE tasks SET {sets} WHERE id = ${len(columns) + 1}"


async def update_task_row(conn: Conn, task_id: str, changes: dict[str, Any]) -> None:
    """Set `changes` on one task; unknown column names are refused, never put into SQL."""
    values = [encode_column(c, v) if c in JSON_COLUMNS else v for c, v in changes.items()]
    await conn.execute(_update_sql(tuple(changes)), *values, task_id)


async def insert_event(conn: Conn, event: Event, decision: Decision) -> None:
    """Store an event, with the decision's outcome and detail where it has none of its own."""
    await conn.execute(
        "INSERT INTO events (task_id, source, received_at, outcome, detail, body)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        event.task_id,
        event.source,
        event.received_at,
        event.outcome or decision.outcome,
        event.detail or decision.detail,
        event.body,
    )
