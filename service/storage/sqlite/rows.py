"""How tasks and events map to SQLite rows: column lists, row decoding, UPDATE and INSERT."""

from __future__ import annotations

import dataclasses
import functools
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from service.domain.records import Task
from service.domain.transitions import Decision
from service.storage.base import Event

_JSON_COLUMNS = frozenset({"input", "results", "metadata"})
TASK_COLUMNS = (
    "id", "api_key_id", "model", "endpoint", "mode", "status", "progress", "upstream_id",
    "input", "results", "failure_reason", "error", "metadata", "callback_url", "created_at",
    "updated_at", "completed_at", "submit_state", "idempotency_key", "request_hash",
    "token_hash", "last_event_at", "next_poll_at", "poll_attempts",
)  # fmt: skip
# Columns in the order of `Task`'s fields, so a row becomes a Task positionally (hot path).
_FIELDS = tuple(f.name for f in dataclasses.fields(Task))
assert set(_FIELDS) == {*TASK_COLUMNS, "seq"}
_JSON_AT = tuple(i for i, name in enumerate(_FIELDS) if name in _JSON_COLUMNS)
SELECT_TASK = f"SELECT {', '.join(_FIELDS)} FROM tasks"
# the same columns, with the JSON payload left empty (what state transitions need)
_EMPTY_PAYLOAD = {"input": "'{}' AS input", "results": "'[]' AS results", "metadata": "NULL"}
SELECT_STATE = f"SELECT {', '.join(_EMPTY_PAYLOAD.get(c, c) for c in _FIELDS)} FROM tasks"


def encode_column(column: str, value: Any) -> Any:
    """A task value as stored: the JSON columns as compact JSON text, the rest as they are."""
    if column in _JSON_COLUMNS and value is not None:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


def row_task(row: Sequence[Any]) -> Task:
    """A row selected with `SELECT_TASK` or `SELECT_STATE` as a Task (positionally)."""
    values = list(row)
    for i in _JSON_AT:
        text = values[i]
        if text is not None:
            values[i] = [] if text == "[]" else {} if text == "{}" else json.loads(text)
    return Task(*values)


def one_task(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Task | None:
    """The task `sql` selects, or None."""
    row = conn.execute(sql, params).fetchone()
    return row_task(row) if row is not None else None


_COLUMN_SET = frozenset(TASK_COLUMNS)


@functools.lru_cache(maxsize=256)
def _update_sql(columns: tuple[str, ...]) -> str:
    """`UPDATE tasks SET a = ?, b = ? WHERE id = ?` for known columns (a handful of shapes)."""
    unknown = set(columns) - _COLUMN_SET
    if unknown:
        raise ValueError(f"unknown task columns: {sorted(unknown)}")
    return f"UPDATE tasks SET {', '.join(f'{column} = ?' for column in columns)} WHERE id = ?"


def update_task_row(conn: sqlite3.Connection, task_id: str, changes: dict[str, Any]) -> None:
    """Set `changes` on one task; unknown column names are refused, never put into SQL."""
    sql = _update_sql(tuple(changes))
    values = [encode_column(c, v) if c in _JSON_COLUMNS else v for c, v in changes.items()]
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
