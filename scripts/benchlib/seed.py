"""Seeding databases with many running tasks, fast, straight into the SQLite file.

Rows follow the schema of `service/storage/migrations.py` (the file is migrated by
`grsai-relay db migrate` first). Every task's id, callback token and GrsAI id derive from its
index, so a load generator can address any task without reading the database back. Seeding
alone runs with `synchronous=OFF` and a rollback journal in memory (the relay turns WAL back on
when it opens the file), in transactions of 50,000 rows.
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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchlib.plan import PlanTask

BATCH = 50_000
MODEL, ENDPOINT = "nano-banana-pro", "/v1/draw/nano-banana"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def bench_task(index: int) -> PlanTask:
    """The seeded task number `index`: its id, callback token (43 chars) and GrsAI id."""
    tag = str(index).encode()
    task_id = "task_" + _b64(hashlib.sha256(b"bench-task-" + tag).digest()[:16])
    token = _b64(hashlib.sha256(b"bench-token-" + tag).digest())
    upstream = uuid.UUID(bytes=hashlib.sha256(b"bench-upstream-" + tag).digest()[:16])
    return PlanTask(task_id, token, f"{index % 32 + 1}-{upstream}")


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


def _rows(count: int, key_id: str, now: float) -> Iterator[tuple[object, ...]]:
    for i in range(count):
        t = bench_task(i)
        created = now - 3600 + 3000 * i / max(1, count)  # all submitted within the last hour
        prompt = f"benchmark task {i}: a lighthouse at dusk"
        task_input = {"model": MODEL, "prompt": prompt, "aspectRatio": "16:9"}
        yield (
            t.id, key_id, MODEL, ENDPOINT, "callback", "running", 0, t.upstream_id,
            json.dumps(task_input, separators=(",", ":")), "[]", None, None,
            json.dumps({"order": i}, separators=(",", ":")), None, created, created, None,
            "submitted", None, None, hashlib.sha256(t.token.encode()).digest(), created,
            now + 86400, 0,
        )  # fmt: skip


# Fixed column names; every value is bound.
_INSERT = (
    "INSERT INTO tasks (id, api_key_id, model, endpoint, mode, status, progress, upstream_id,"  # noqa: S608
    " input, results, failure_reason, error, metadata, callback_url, created_at, updated_at,"
    " completed_at, submit_state, idempotency_key, request_hash, token_hash, last_event_at,"
    " next_poll_at, poll_attempts) VALUES (" + ",".join("?" * 24) + ")"
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
        rows = _rows(count, key_id, now)
        for _ in range(0, count, BATCH):
            db.execute("BEGIN")
            db.executemany(_INSERT, itertools.islice(rows, BATCH))
            db.execute("COMMIT")
        db.execute("PRAGMA journal_mode = WAL")
    seconds = time.perf_counter() - started
    return Seeded(path, count, seconds, file_bytes(path))


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
