"""How tasks and events are written to SQLite rows (the layout is `service.storage.columns`)."""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

from service.domain.records import Task
from service.domain.transitions import Decision
from service.storage.base import Event
from service.storage.columns import (
    JSON_COLUMNS,
    SELECT_STATE,
    SELECT_TASK,
    TASK_COLUMNS,
    checked_columns,
    encode_column,
    row_task,
)

__all__ = [
    "SELECT_STATE",
    "SELECT_TASK",
    "TASK_COLUMNS",
    "encode_column",
    "insert_event",
    "one_task",
    "row_task",
    "update_task_row",
]


def one_task(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Task | None:
    """The task `sql` selects, or None."""
    row = conn.execute(sql, params).fetchone()
    return row_task(row) if row is not None else None


@functools.lru_cache(maxsize=256)
def _update_sql(columns: tuple[str, ...]) -> str:
    """`UPDATE tasks SET a = ?, b = ? WHERE id = ?` for known columns (a handful of shapes)."""
    checked_columns(columns)
    return f"UPDATE tasks SET {', '.join(f'{column} = ?' for column in columns)} WHERE id = ?"


def update_task_row(conn: sqlite3.Connection, task_id: str, changes: dict[str, Any]) -> None:
    """Set `changes` on one task; unknown column names are refused, never put into SQL."""
    sql = _update_sql(tuple(changes))
    values = [encode_column(c, v) if c in JSON_COLUMNS else v for c, v in changes.items()]
    conn.execute(sql, (*values, task_id))


def insert_event(conn: sqlite3.Connection, event: Event, decision: Decision) -> None:
    """Store an event, with the decision's outcome and detail where it has none of its own."""
    conn.execute(
        "INSERT INTO events (task_id, source, received_at, outcome, detail, body)"
        " VALUES (?,?,?,?,?,?)",
        (
            event.task_id,
            event.source,
            event.received_at,
            event.outcome or decision.outcome,
            event.detail or decision.detail,
            event.body,
        ),
    )
