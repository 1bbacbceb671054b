"""How a task is laid out in a row, the same for every backend: the column lists, the JSON
columns' text encoding, and a selected row back to a `Task`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from service.domain.records import Task

JSON_COLUMNS = frozenset({"input", "results", "metadata"})
TASK_COLUMNS = (
    "id", "api_key_id", "model", "endpoint", "mode", "status", "progress", "upstream_id",
    "input", "results", "failure_reason", "error", "metadata", "callback_url", "callback_format",
    "created_at", "updated_at", "completed_at", "submit_state", "idempotency_key",
    "request_hash", "token_hash", "last_event_at", "next_poll_at", "poll_attempts",
)  # fmt: skip
COLUMN_SET = frozenset(TASK_COLUMNS)
# Columns in the order of `Task`'s fields, so a row becomes a Task positionally (hot path).
FIELDS = tuple(f.name for f in dataclasses.fields(Task))
assert set(FIELDS) == {*TASK_COLUMNS, "seq"}
_JSON_AT = tuple(i for i, name in enumerate(FIELDS) if name in JSON_COLUMNS)
SELECT_TASK = f"SELECT {', '.join(FIELDS)} FROM tasks"
# the same columns, with the JSON payload left empty (what state transitions need)
_EMPTY_PAYLOAD = {"input": "'{}' AS input", "results": "'[]' AS results", "metadata": "NULL"}
SELECT_STATE = f"SELECT {', '.join(_EMPTY_PAYLOAD.get(c, c) for c in FIELDS)} FROM tasks"


def encode_column(column: str, value: Any) -> Any:
    """A task value as stored: the JSON columns as compact JSON text, the rest as they are."""
    if column in JSON_COLUMNS and value is not None:
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


def checked_columns(columns: Sequence[str]) -> None:
    """Refuse column names that are not task columns (they are never put into SQL)."""
    unknown = set(columns) - COLUMN_SET
    if unknown:
        raise ValueError(f"unknown task columns: {sorted(unknown)}")
