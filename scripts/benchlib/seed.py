"""Seeding databases with many running tasks, fast, straight into the SQLite file.

Rows follow the schema of `service/storage/sqlite/migrations.py` (the file is migrated by
`grsai-relay db migrate` first). Every task's id, callback token and GrsAI id derive from its
index, so a load generator can address any task without reading the database back, and the
GrsAI id carries the index, so the simulator can answer for any seeded task (see
`benchlib.simulator`). Seeding alone runs with `synchronous=OFF` and a rollback journal in memory
(the relay turns WAL back on when it opens the file), in transactions of 50,000 rows. The naive
peer (`scripts/bench_naive.py`) gets the same tasks in its own file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench_naive import SCHEMA as naive_schema
from benchlib.plan import PlanTask
from service.domain.records import Task
from service.storage.columns import TASK_COLUMNS, encode_column  # the relay's own row layout

BATCH = 50_000
MODEL, ENDPOINT = "nano-banana-pro", "/v1/draw/nano-banana"
UPSTREAM_MARK = "b3e7c0de-0000-4000-8000-"  # a seeded task's GrsAI id: N-<mark><index, 12 hex>


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def bench_task(index: int) -> PlanTask:
    """The seeded task number `index`: its id, callback token (43 chars) and GrsAI id."""
    tag = str(index).encode()
    task_id = "task_" + _b64(hashlib.sha256(b"bench-task-" + tag).digest()[:16])
    token = _b64(hashlib.sha256(b"bench-token-" + tag).digest())
    return PlanTask(task_id, token, f"{index % 32 + 1}-{UPSTREAM_MARK}{index:012x}")


def bench_index(upstream_id: str) -> int | None:
    """The index of the seeded task with this GrsAI id; None if it is not one."""
    _, _, rest = upstream_id.partition("-")
    if not rest.startswith(UPSTREAM_MARK) or len(rest) != len(UPSTREAM_MARK) + 12:
        return None
    try:
        return int(rest[len(UPSTREAM_MARK) :], 16)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Seeded:
    """A seeded database file."""

    path: Path
    tasks: int
    seconds: float
    bytes: int

    @property
    def bytes_per_task(self) -> float:
        """File size over task count (rows and their indexes, no events)."""
        return self.bytes / self.tasks if self.tasks else 0.0


def task_rows(count: int, key_id: str, now: float) -> Iterator[tuple[object, ...]]:
    """The `count` seeded tasks as rows of `TASK_COLUMNS`, created within the last hour."""
    for i in range(count):
        t = bench_task(i)
        created = now - 3600 + 3000 * i / max(1, count)  # all submitted within the last hour
        prompt = f"benchmark task {i}: a lighthouse at dusk"
        task_input = {"model": MODEL, "prompt": prompt, "aspectRatio": "16:9"}
        task = Task(
            id=t.id, api_key_id=key_id, model=MODEL, endpoint=ENDPOINT, mode="callback",
            input=task_input, created_at=created, updated_at=created, status="running",
            upstream_id=t.upstream_id, metadata={"order": i}, submit_state="submitted",
            token_hash=hashlib.sha256(t.token.encode()).digest(), last_event_at=created,
            next_poll_at=now + 86400,
        )  # fmt: skip
        # every column the relay has, encoded as it stores them (a new column needs no change)
        yield tuple(encode_column(column, getattr(task, column)) for column in TASK_COLUMNS)


# Fixed column names; every value is bound.
_INSERT = (
    f"INSERT INTO tasks ({', '.join(TASK_COLUMNS)})"  # noqa: S608
    f" VALUES ({','.join('?' * len(TASK_COLUMNS))})"
)


def api_key_id(path: Path) -> str:
    """The id of the (only) API key in a migrated database."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT id FROM api_keys ORDER BY created_at LIMIT 1").fetchone()
    if row is None:
        raise RuntimeError(f"no API key in {path}")
    return str(row[0])


def seed(path: Path, count: int, key_id: str) -> Seeded:
    """Insert `count` running callback-mode tasks owned by `key_id` into a migrated file."""
    started = time.perf_counter()
    now = time.time()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = MEMORY")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -262144")  # 256 MiB: index inserts stay in memory
        rows = task_rows(count, key_id, now)
        for _ in range(0, count, BATCH):
            db.execute("BEGIN")
            db.executemany(_INSERT, itertools.islice(rows, BATCH))
            db.execute("COMMIT")
        db.execute("PRAGMA journal_mode = WAL")
    seconds = time.perf_counter() - started
    return Seeded(path, count, seconds, file_bytes(path))


def seed_naive(path: Path, count: int) -> float:
    """The same `count` running tasks in a fresh database of the naive peer; return seconds.

    One `executemany` in one transaction. Like `seed`, seeding alone skips syncs and keeps
    its journal and the index pages in memory; none of that outlives this connection, so the
    peer runs with its own settings (see `bench_naive`).
    """
    started = time.perf_counter()
    now = time.time()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode = MEMORY")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -262144")  # 256 MiB: index inserts stay in memory
        for statement in naive_schema:
            db.execute(statement)
        db.executemany(_NAIVE_INSERT, _naive_rows(count, now))
        db.commit()
    return time.perf_counter() - started


def _naive_rows(count: int, now: float) -> Iterator[tuple[object, ...]]:
    for i in range(count):
        t = bench_task(i)
        created = now - 3600 + 3000 * i / max(1, count)
        prompt = f"benchmark task {i}: a lighthouse at dusk"
        task_input = {"model": MODEL, "prompt": prompt, "aspectRatio": "16:9"}
        yield (
            t.id, t.token, t.upstream_id, MODEL, "running", 0,
            json.dumps(task_input, separators=(",", ":")), "[]", None, created, created,
        )  # fmt: skip


_NAIVE_INSERT = (  # fixed column names; every value is bound
    "INSERT INTO tasks (id, token, upstream_id, model, status, progress, input, results, error,"  # noqa: S608
    " created_at, updated_at) VALUES (" + ",".join("?" * 11) + ")"
)


def reschedule(path: Path, tasks: list[PlanTask], now: float, silence: float) -> None:
    """Make `tasks` look as if each had news within the last `silence` seconds.

    That is how a relay leaves running callback-mode tasks that hear from GrsAI: each is due
    for a poll `silence` seconds after its last news, so the poller polls the ones that stay
    silent. Due times are spread evenly over the coming window (in no particular order).
    """
    rows = []
    for k, task in enumerate(tasks):
        due = now + silence * ((k * 0.6180339887498949) % 1.0)
        rows.append((due - silence, due, task.id))
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN")
        db.executemany(
            "UPDATE tasks SET last_event_at = ?, next_poll_at = ?, poll_attempts = 0"
            " WHERE id = ? AND status = 'running'",
            rows,
        )
        db.execute("COMMIT")


def file_bytes(path: Path) -> int:
    """Size of a database file with its WAL, if any."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def sample(count: int, size: int, seed_value: int = 7) -> list[PlanTask]:
    """`size` distinct seeded tasks drawn at random from `count` (all of them if fewer)."""
    if size >= count:
        return [bench_task(i) for i in range(count)]
    picked = random.Random(seed_value).sample(range(count), size)
    return [bench_task(i) for i in picked]
