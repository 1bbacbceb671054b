"""Operator commands: `tasks show|list`, `purge --older-than`, `db backup`, and their storage SQL.

Data is made through the storage API on a real SQLite file; each command runs through
`cli.main` (in a worker thread when the test holds the database open on its own loop).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import service.storage.sqlite as sqlite_module
from service.cli import main as cli
from service.cli import ops as cli_ops
from service.domain.credentials import hash_secret
from service.domain.outbox import final_event
from service.domain.records import ApiKey, Asset, Attempt, Task, delivery_json
from service.domain.transitions import Decision
from service.files.store import LocalAssetStore
from service.storage import BackupError, Event
from service.storage.sqlite import SQLiteStorage
from service.storage.sqlite.migrations import LATEST
from service.storage.sqlite.ops import SQLiteOps, backup_database

ROOT = Path(__file__).resolve().parents[2]
LONG_AGO = 1_000_000_000.0  # 2001: before any cutoff these tests use; also an "old" file mtime
BASE_URL = "https://relay.example"
SHARED = b"a file an old and a recent task both produced"
ALONE = b"a file only an old task produced"
FILLER = "x" * 2000  # makes each task row big enough that a backup needs many steps


class Ops(SQLiteStorage, SQLiteOps):
    """`SQLiteStorage` with the operator mixin (a no-op once it is among the real bases)."""


@pytest.fixture(name="db_path")
def _db_path(tmp_path: Path) -> Path:
    return tmp_path / "relay.db"


@pytest.fixture(name="cli_env", autouse=True)
def _cli_env(tmp_path: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every command at this test's database and files, away from any `.env`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db_path}")
    monkeypatch.setenv("ASSET_DIR", str(tmp_path / "assets"))
    monkeypatch.setenv("GRSAI_API_KEY", "sk-test")
    monkeypatch.setenv("PUBLIC_BASE_URL", BASE_URL)
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)  # keep test logging as is
    if not issubclass(SQLiteStorage, SQLiteOps):  # until the mixin is wired into the backend
        monkeypatch.setattr(sqlite_module, "SQLiteStorage", Ops)


@pytest.fixture(name="storage")
async def _storage(db_path: Path) -> AsyncIterator[Ops]:
    storage = Ops(str(db_path))
    await storage.open()
    yield storage
    await storage.close()


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> LocalAssetStore:
    return LocalAssetStore(tmp_path / "assets")


async def run_cli(*argv: str) -> int:
    """`grsai-relay ...` in a worker thread (it runs its own event loop)."""
    return await asyncio.to_thread(cli.main, list(argv))


def relay_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`grsai-relay ...` run as a user runs it: a subprocess, in this test's folder and env."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def make_key(storage: SQLiteStorage, name: str) -> ApiKey:
    """Store an API key `key_<name>` with prefix `grk_<name>`."""
    key = ApiKey(f"key_{name}", name, f"grk_{name}", LONG_AGO)
    await storage.create_api_key(key, hash_secret(f"secret-{name}"))
    return key


async def new_task(
    storage: SQLiteStorage,
    key: ApiKey,
    name: str,
    *,
    at: float = LONG_AGO,
    model: str = "nano-banana",
    callback_url: str | None = None,
) -> Task:
    """Insert a pending task `task_<name>` created at `at`."""
    task = Task(
        id=f"task_{name}",
        api_key_id=key.id,
        model=model,
        endpoint="/v1/draw/nano-banana",
        mode="poll",
        input={"prompt": f"fox {name}", "filler": FILLER},
        created_at=at,
        updated_at=at,
        callback_url=callback_url,
    )
    await storage.insert_task(task)
    return task


async def observe(
    storage: SQLiteStorage, task_id: str, at: float, changes: dict[str, object], *copies: str
) -> None:
    """Apply `changes` (and queue copies of `copies`) with one poll event, as the poller does."""
    if copies:
        changes["results"] = [
            {"url": None, "upstream_url": url, "asset": {"status": "pending", "error": None}}
            for url in copies
        ]

    def decide(task: Task) -> Decision:
        status = str(changes.get("status", task.status))
        event = final_event(
            task.id, task.api_key_id, status, task.callback_url, at, copies_pending=bool(copies)
        )
        return Decision("applied", {"updated_at": at, **changes}, copies=copies, final_event=event)

    body = json.dumps({"id": task_id, **changes}, default=str).encode()
    await storage.apply(task_id, decide, Event(task_id, "poll", at, body))


async def finish(
    storage: SQLiteStorage, task_id: str, at: float, status: str = "succeeded", *copies: str
) -> None:
    """Make a task terminal at `at`."""
    changes: dict[str, object] = {"status": status, "completed_at": at}
    if status == "succeeded":
        changes["progress"] = 100
    await observe(storage, task_id, at, changes, *copies)


async def store_copy(
    storage: SQLiteStorage, store: LocalAssetStore, task_id: str, url: str, data: bytes, at: float
) -> str:
    """Store `data` as the task's copy of result 0 (file aged, so no recent-use guard keeps it)."""
    staged = store.staging_file()
    staged.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    await store.put(staged, sha)
    os.utime(store.path(sha), (LONG_AGO, LONG_AGO))
    asset = Asset(task_id, 0, url, "stored", 1, None, None, sha, "image/png", len(data))
    asset.stored_at = at
    await storage.save_asset(asset, at)
    return sha


async def deliver(storage: SQLiteStorage, task_id: str, at: float) -> None:
    """Record one successful attempt at the task's queued callback."""
    (delivery, _), *_ = await storage.deliveries_of(task_id)
    delivery.status, delivery.attempts = "delivered", 1
    delivery.next_attempt_at, delivery.delivered_at = None, at
    await storage.record_attempt(delivery, Attempt(delivery.id, at, 200, 12.5, None), gone=False)


def count(storage: SQLiteStorage, table: str) -> int:
    """Rows in `table`, read through a fresh connection."""
    sql = f"SELECT count(*) FROM {table}"  # noqa: S608  # the tests' own table names
    conn = sqlite3.connect(storage.path)
    try:
        found: int = conn.execute(sql).fetchone()[0]
    finally:
        conn.close()
    return found


# --- tasks list / show -----------------------------------------------------------------------


@dataclass
class Listed:
    """Three tasks of key A (one running, one succeeded, one Seedream) and one of key B."""

    a: ApiKey
    b: ApiKey


@pytest.fixture(name="listed")
async def _listed(storage: Ops) -> Listed:
    a, b = await make_key(storage, "alpha"), await make_key(storage, "beta")
    await new_task(storage, a, "1", at=LONG_AGO + 1)
    await new_task(storage, b, "2", at=LONG_AGO + 2)
    await new_task(storage, a, "3", at=LONG_AGO + 3, model="seedream-4")
    await new_task(storage, a, "4", at=LONG_AGO + 4)
    await observe(storage, "task_1", LONG_AGO + 10, {"status": "running", "progress": 40})
    await finish(storage, "task_4", LONG_AGO + 11)
    return Listed(a, b)


def listed_ids(out: str) -> list[str]:
    """The task ids of `tasks list` output, in order."""
    return [line.split("\t")[0] for line in out.splitlines()]


async def test_tasks_list_is_newest_first_across_keys(
    listed: Listed, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without filters every key's tasks are listed, newest first, one tab-separated line each."""
    assert await run_cli("tasks", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert listed_ids("\n".join(lines)) == ["task_4", "task_3", "task_2", "task_1"]
    assert lines[3].split("\t") == [
        "task_1", "running", "40%", "nano-banana", "2001-09-09T01:46:41.000Z", "key_alpha",
    ]  # fmt: skip
    assert lines[2].split("\t")[-1] == "key_beta"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--status", "succeeded"], ["task_4"]),
        (["--status", "pending"], ["task_3", "task_2"]),
        (["--model", "seedream-4"], ["task_3"]),
        (["--key", "key_beta"], ["task_2"]),
        (["--key", "grk_alpha"], ["task_4", "task_3", "task_1"]),
        (["--key", "grk_alpha…"], ["task_4", "task_3", "task_1"]),
        (["--key", "key_alpha", "--status", "pending"], ["task_3"]),
        (["--limit", "2"], ["task_4", "task_3"]),
    ],
)
async def test_tasks_list_filters(
    listed: Listed, capsys: pytest.CaptureFixture[str], args: list[str], expected: list[str]
) -> None:
    """--status, --model, --key (id, prefix, or prefix as `keys list` shows it) and --limit."""
    assert await run_cli("tasks", "list", *args) == 0
    assert listed_ids(capsys.readouterr().out) == expected


async def test_tasks_list_unknown_key_fails(
    listed: Listed, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown --key is an error, not an empty list."""
    assert await run_cli("tasks", "list", "--key", "grk_nobody") == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "no key with id or prefix 'grk_nobody'\n")


@pytest.mark.parametrize("args", [["--status", "done"], ["--limit", "0"]])
def test_tasks_list_rejects_bad_arguments(args: list[str]) -> None:
    """An unknown status or a limit below 1 is a usage error."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["tasks", "list", *args])
    assert exited.value.code == 2


async def test_tasks_list_storage_returns_tasks(listed: Listed, storage: Ops) -> None:
    """`list_all_tasks` returns whole tasks, filters combined, newest first."""
    found = await storage.list_all_tasks(status="pending", api_key_id=listed.a.id, limit=10)
    assert [(t.id, t.model, t.input["prompt"]) for t in found] == [
        ("task_3", "seedream-4", "fox 3")
    ]
    assert await storage.list_all_tasks(model="nope") == []


async def test_tasks_show_prints_task_events_and_deliveries(
    storage: Ops, store: LocalAssetStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """The task as the API shows it (with PUBLIC_BASE_URL), its events and its deliveries."""
    key = await make_key(storage, "alpha")
    await new_task(storage, key, "1", callback_url="https://client.example/hook")
    await observe(storage, "task_1", LONG_AGO + 5, {"status": "running", "progress": 30})
    await finish(storage, "task_1", LONG_AGO + 9, "succeeded", "https://up.example/1.png")
    await store_copy(storage, store, "task_1", "https://up.example/1.png", ALONE, LONG_AGO + 20)
    await deliver(storage, "task_1", LONG_AGO + 21)
    assert await run_cli("tasks", "show", "task_1") == 0
    shown = json.loads(capsys.readouterr().out)
    task = await storage.task("task_1")
    assert task is not None
    events, deliveries = shown.pop("events"), shown.pop("deliveries")
    assert shown == json.loads(json.dumps(task.to_json(BASE_URL)))
    assert shown["results"][0]["url"] == f"{BASE_URL}/v1/tasks/task_1/results/0"
    stored = await storage.events("task_1")
    assert events == [
        {
            "source": "poll",
            "outcome": "applied",
            "detail": None,
            "received_at": at,
            "body_bytes": len(e.body),
        }
        for e, at in zip(
            stored, ["2001-09-09T01:46:45.000Z", "2001-09-09T01:46:49.000Z"], strict=True
        )
    ]
    assert deliveries == [delivery_json(d, a) for d, a in await storage.deliveries_of("task_1")]
    assert deliveries[0]["status"] == "delivered"
    assert deliveries[0]["attempt_log"][0]["status_code"] == 200


@pytest.mark.parametrize(
    ("env", "base", "note"),
    [
        ({"GRSAI_API_KEY": "", "PORT": "8123"}, "http://127.0.0.1:8123",
         "PUBLIC_BASE_URL is unset: result URLs assume the demo relay at"
         " http://127.0.0.1:8123 (HOST, PORT)"),
        ({}, "", "PUBLIC_BASE_URL is unset: result URLs are relative to the relay's address"),
    ],
)  # fmt: skip
async def test_tasks_show_without_public_base_url_says_so(
    storage: Ops,
    store: LocalAssetStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    base: str,
    note: str,
) -> None:
    """Unset PUBLIC_BASE_URL: demo mode shows its own absolute URLs, else a note on stderr."""
    monkeypatch.delenv("PUBLIC_BASE_URL")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    key = await make_key(storage, "alpha")
    await new_task(storage, key, "1")
    await finish(storage, "task_1", LONG_AGO + 9, "succeeded", "https://up.example/1.png")
    await store_copy(storage, store, "task_1", "https://up.example/1.png", ALONE, LONG_AGO + 20)
    assert await run_cli("tasks", "show", "task_1") == 0
    captured = capsys.readouterr()
    url = json.loads(captured.out)["results"][0]["url"]
    assert url == f"{base}/v1/tasks/task_1/results/0"
    assert captured.err == f"{note}\n"


async def test_keys_list_has_a_header_and_prefixes_revoke_accepts(storage: Ops) -> None:
    """`keys list` starts with a header row; its prefix column pasted into `keys revoke` works."""
    made = relay_cli("keys", "create", "--name", "backend")
    assert made.returncode == 0, made.stderr
    lines = relay_cli("keys", "list").stdout.splitlines()
    assert lines[0].split("\t") == ["id", "prefix", "name", "created_at", "state"]
    key_id, prefix, name, _, state = lines[1].split("\t")
    assert (name, state, len(lines)) == ("backend", "active", 2)
    assert len(prefix) == 12
    assert made.stdout.startswith(prefix)
    revoked = relay_cli("keys", "revoke", prefix)
    assert (revoked.returncode, revoked.stdout) == (0, f"revoked {prefix}\n")
    listed = relay_cli("keys", "list").stdout.splitlines()[1].split("\t")
    assert (listed[0], listed[4].split()[0]) == (key_id, "revoked")


async def test_tasks_show_unknown_task_fails(
    storage: Ops, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown id exits 1 with a message on stderr and nothing on stdout."""
    assert await run_cli("tasks", "show", "task_missing") == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "no task with id 'task_missing'\n")


# --- purge -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400.0), ("12h", 43200.0), ("90m", 5400.0), ("45s", 45.0),
     ("1.5d", 129600.0), (" 2H ", 7200.0), ("0s", 0.0)],
)  # fmt: skip
def test_duration_parses_units(text: str, seconds: float) -> None:
    """Days, hours, minutes or seconds."""
    assert cli_ops.duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "-1d", "3w", "1d2h", "soon", "30", "0", "3600"])
def test_duration_rejects_nonsense(text: str) -> None:
    """Anything else, a bare number included, is a usage error."""
    with pytest.raises(argparse.ArgumentTypeError):
        cli_ops.duration(text)


async def test_purge_refuses_a_bare_number_and_deletes_nothing(aged: Aged, storage: Ops) -> None:
    """`purge --older-than 30` exits 2 naming the forms (30d, 12h, ...); every task is kept."""
    done = relay_cli("purge", "--older-than", "30")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        "grsai-relay purge: error: argument --older-than: '30' has no unit;"
        " write 30d (days), 12h (hours), 90m (minutes) or 45s (seconds)"
    )
    assert await surviving(storage) == sorted(aged.gone + aged.kept)


def test_purge_needs_older_than() -> None:
    """There is no default age: purging everything by accident takes an explicit 0."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["purge"])
    assert exited.value.code == 2


@dataclass
class Aged:
    """Tasks around a 30-day cutoff; `gone` should be purged, `kept` must survive."""

    gone: list[str]
    kept: list[str]
    alone: str
    shared: str


@pytest.fixture(name="aged")
async def _aged(storage: Ops, store: LocalAssetStore) -> Aged:
    """Old: done with a copy and a delivered callback; failed; done sharing a file with a new one.

    Kept: a running task (even with a stray completed_at), a pending one, a recent success, and
    an old success whose callback is still being retried.
    """
    now = time.time()
    a, b = await make_key(storage, "alpha"), await make_key(storage, "beta")
    await new_task(storage, a, "done", callback_url="https://client.example/hook")
    await finish(storage, "task_done", LONG_AGO, "succeeded", "https://up.example/a.png")
    alone = await store_copy(storage, store, "task_done", "https://up.example/a.png", ALONE, 0)
    await deliver(storage, "task_done", LONG_AGO)
    await new_task(storage, b, "failed")
    await observe(storage, "task_failed", LONG_AGO, {"status": "running"})
    await finish(storage, "task_failed", LONG_AGO, "failed")
    await new_task(storage, a, "old_shared")
    await finish(storage, "task_old_shared", LONG_AGO, "succeeded", "https://up.example/s.png")
    shared = await store_copy(
        storage, store, "task_old_shared", "https://up.example/s.png", SHARED, LONG_AGO
    )
    await new_task(storage, b, "new_shared", at=now)
    await finish(storage, "task_new_shared", now, "succeeded", "https://up.example/s2.png")
    await store_copy(storage, store, "task_new_shared", "https://up.example/s2.png", SHARED, now)
    await new_task(storage, a, "running")
    await observe(storage, "task_running", LONG_AGO, {"status": "running", "completed_at": 1.0})
    await new_task(storage, a, "pending")
    await new_task(storage, a, "retrying", callback_url="https://client.example/hook")
    await finish(storage, "task_retrying", LONG_AGO)
    gone = ["task_done", "task_failed", "task_old_shared"]
    kept = ["task_new_shared", "task_running", "task_pending", "task_retrying"]
    return Aged(gone, kept, alone, shared)


async def surviving(storage: Ops) -> list[str]:
    """Ids of the tasks still stored, oldest first."""
    return sorted(t.id for t in await storage.list_all_tasks(limit=100))


async def test_purge_deletes_old_terminal_tasks_and_everything_about_them(
    aged: Aged, storage: Ops, store: LocalAssetStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old idle terminal tasks go with their events, copies, deliveries and orphaned files."""
    before = {t: count(storage, t) for t in ("events", "assets", "deliveries")}
    assert await run_cli("purge", "--older-than", "30d") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("deleted 3 tasks completed before ")
    assert out[0].endswith(" with 4 events, 2 asset records, 1 deliveries and 1 delivery attempts")
    assert out[1:] == [
        "kept 1 tasks still copying results or delivering callbacks",
        "removed 1 files no remaining task refers to",
    ]
    assert await surviving(storage) == sorted(aged.kept)
    for task_id in aged.gone:
        assert await storage.events(task_id) == []
        assert await storage.assets_of(task_id) == []
        assert await storage.deliveries_of(task_id) == []
    assert count(storage, "events") == before["events"] - 4
    assert count(storage, "assets") == before["assets"] - 2
    assert count(storage, "deliveries") == before["deliveries"] - 1
    assert count(storage, "delivery_attempts") == 0
    assert not store.path(aged.alone).exists()
    assert store.path(aged.shared).read_bytes() == SHARED
    assert await storage.hash_in_use(aged.shared)


async def test_purge_dry_run_changes_nothing(
    aged: Aged, storage: Ops, store: LocalAssetStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run prints the same counts as the real purge and deletes no row and no file."""
    assert await run_cli("purge", "--older-than", "30d", "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("would delete 3 tasks completed before ")
    assert out[0].endswith(" with 4 events, 2 asset records, 1 deliveries and 1 delivery attempts")
    assert out[1:] == [
        "kept 1 tasks still copying results or delivering callbacks",
        "would remove 1 files no remaining task refers to",
    ]
    assert await surviving(storage) == sorted(aged.gone + aged.kept)
    assert store.path(aged.alone).exists()
    assert count(storage, "delivery_attempts") == 1


async def test_purge_with_a_short_age_still_spares_busy_and_unfinished_tasks(
    aged: Aged, storage: Ops, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even `--older-than 0s` keeps non-terminal tasks and tasks whose callback is pending."""
    assert await run_cli("purge", "--older-than", "0s", "--batch", "1") == 0
    assert capsys.readouterr().out.startswith("deleted 4 tasks ")
    assert await surviving(storage) == ["task_pending", "task_retrying", "task_running"]


async def test_purge_counts_match_what_purge_deletes(aged: Aged, storage: Ops) -> None:
    """`purge_counts` predicts `purge_tasks` exactly, whatever the batch size."""
    cutoff = time.time() - 86400
    predicted = await storage.purge_counts(cutoff)
    assert predicted == {
        "tasks": 3, "events": 4, "assets": 2, "deliveries": 1, "delivery_attempts": 1, "held": 1,
    }  # fmt: skip
    deleted = await storage.purge_tasks(cutoff, 1)
    assert deleted == {k: v for k, v in predicted.items() if k != "held"}
    assert await storage.purge_tasks(cutoff, 1) == dict.fromkeys(deleted, 0)
    assert (await storage.purge_counts(cutoff))["held"] == 1


async def test_purge_works_in_batches(storage: Ops) -> None:
    """Each batch is its own transaction: 7 tasks at batch 3 take three writes."""
    key = await make_key(storage, "alpha")
    for n in range(7):
        await new_task(storage, key, str(n))
        await finish(storage, f"task_{n}", LONG_AGO + n)
    writes = 0
    original = storage._write

    async def counting(op: Any, *, heavy: bool = False) -> Any:
        nonlocal writes
        writes += 1
        assert heavy  # a bulk delete leaves the event loop
        return await original(op, heavy=heavy)

    storage._write = counting  # type: ignore[method-assign]  # count the transactions
    assert (await storage.purge_tasks(LONG_AGO + 100, 3))["tasks"] == 7
    assert writes == 3
    with pytest.raises(ValueError, match="at least 1"):
        await storage.purge_tasks(LONG_AGO, 0)


async def test_hash_in_use_after_purge(aged: Aged, storage: Ops) -> None:
    """A file stays in use only if a task the purge keeps refers to it."""
    cutoff = time.time() - 86400
    assert await storage.hash_in_use(aged.alone)
    assert not await storage.hash_in_use_after_purge(aged.alone, cutoff)
    assert await storage.hash_in_use_after_purge(aged.shared, cutoff)
    assert await storage.hash_in_use_after_purge(aged.alone, LONG_AGO - 1)


# --- db backup -------------------------------------------------------------------------------


class Writer(threading.Thread):
    """A serving relay stand-in: commits through the storage API until told to stop.

    Each round is two commits: insert `task_<n>`, then (atomically) set its progress to 50 and
    store one event. `first` rounds run before `ready` is set.
    """

    def __init__(self, path: Path, first: int) -> None:
        super().__init__(daemon=True)
        self.path, self.first = path, first
        self.rounds = 0
        self.ready, self.halt = threading.Event(), threading.Event()
        self.progressed = threading.Condition()
        self.error: BaseException | None = None

    def run(self) -> None:
        """Write on this thread's own event loop."""
        try:
            asyncio.run(self._write())
        except BaseException as exc:  # reported by the test through `stop`
            self.error = exc
        finally:
            self.ready.set()
            with self.progressed:
                self.progressed.notify_all()

    async def _write(self) -> None:
        storage = Ops(str(self.path))
        await storage.open()
        try:
            key = await make_key(storage, "writer")
            while not self.halt.is_set():
                name = f"{self.rounds + 1:06d}"
                await new_task(storage, key, name)
                await observe(storage, f"task_{name}", LONG_AGO, {"progress": 50})
                with self.progressed:
                    self.rounds += 1
                    self.progressed.notify_all()
                if self.rounds == self.first:
                    self.ready.set()
        finally:
            await storage.close()

    def wait_beyond(self, rounds: int) -> None:
        """Block until more than `rounds` rounds are committed."""
        with self.progressed:
            assert self.progressed.wait_for(lambda: self.rounds > rounds or self.error, 10)

    def stop(self) -> int:
        """Stop writing; return the rounds committed."""
        self.halt.set()
        self.join(10)
        assert self.error is None, self.error
        return self.rounds


@pytest.fixture(name="writer")
def _writer(db_path: Path) -> Iterator[Writer]:
    writer = Writer(db_path, first=300)
    writer.start()
    assert writer.ready.wait(30)
    yield writer
    writer.stop()


def check_copy(path: Path, written: int) -> int:
    """Assert the copy is a consistent prefix of the writer's rounds; return its length."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        rows = conn.execute(
            "SELECT id, progress, (SELECT count(*) FROM events WHERE task_id = tasks.id)"
            " FROM tasks ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    names = [f"task_{n:06d}" for n in range(1, len(rows) + 1)]
    assert [r[0] for r in rows] == names  # a prefix: no task missing before the last one
    assert all((p, e) in ((50, 1), (0, 0)) for _, p, e in rows)  # update and event together
    assert all(p == 50 for _, p, _e in rows[:-1])  # only the newest may be mid-round
    assert 300 <= len(rows) <= written
    return len(rows)


def test_backup_is_a_consistent_snapshot_while_writes_continue(
    writer: Writer, db_path: Path, tmp_path: Path
) -> None:
    """Copying a few pages a step while the writer commits between every step still verifies."""
    steps = 0

    def between_steps() -> None:
        nonlocal steps
        steps += 1
        writer.wait_beyond(writer.rounds)  # at least one commit lands between any two steps

    made = backup_database(db_path, tmp_path / "copy.db", step_pages=8, pause=between_steps)
    written = writer.stop()
    assert steps > 20
    assert (made.path, made.schema_version) == (tmp_path / "copy.db", LATEST)
    assert made.bytes == (tmp_path / "copy.db").stat().st_size
    assert check_copy(made.path, written) < written  # the writer went on after the snapshot


def test_backup_command_while_the_relay_writes(
    writer: Writer,
    db_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`db backup PATH` prints the copy's size and schema version; the copy is private."""
    monkeypatch.setattr("service.storage.sqlite.ops.STEP_PAGES", 16)
    target = tmp_path / "backups" / "relay.db"
    target.parent.mkdir()
    assert cli.main(["db", "backup", str(target)]) == 0
    written = writer.stop()
    check_copy(target, written)
    size = target.stat().st_size
    assert capsys.readouterr().out == (
        f"backed up {db_path} to {target}: {size} bytes, schema version {LATEST}, integrity ok\n"
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["relay.db"]  # no -wal, no temp


def test_backup_replaces_an_earlier_backup(writer: Writer, db_path: Path, tmp_path: Path) -> None:
    """An existing file at PATH is replaced by the new copy."""
    target = tmp_path / "relay.db.bak"
    target.write_bytes(b"yesterday's backup")
    backup_database(db_path, target)
    check_copy(target, writer.stop())


def test_backup_does_not_migrate_the_source(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An old-schema database is copied as it is: a backup taken before an upgrade stays old."""
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE tasks (id TEXT)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    assert cli.main(["db", "backup", str(tmp_path / "copy.db")]) == 0
    assert capsys.readouterr().out.endswith(" bytes, schema version 1, integrity ok\n")
    for path in (db_path, tmp_path / "copy.db"):
        conn = sqlite3.connect(path)
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert (conn.execute("PRAGMA user_version").fetchone()[0], tables) == (1, [("tasks",)])
        conn.close()


def test_backup_of_a_broken_database_keeps_the_previous_backup(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A source that is not a database fails with exit 1; PATH and its folder stay as they were."""
    db_path.write_bytes(b"not a database at all" * 300)
    target = tmp_path / "out" / "relay.db"
    target.parent.mkdir()
    target.write_bytes(b"previous")
    assert cli.main(["db", "backup", str(target), "--force"]) == 1
    assert capsys.readouterr().err.startswith("backup failed: could not copy the database: ")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in target.parent.iterdir()] == ["relay.db"]


def test_backup_command_refuses_to_overwrite_a_file_unless_forced(
    db_path: Path, tmp_path: Path
) -> None:
    """An existing PATH is kept (exit 1, one line saying --force); with --force it is replaced."""
    sqlite3.connect(db_path).close()
    target = tmp_path / "relay.db.bak"
    target.write_bytes(b"yesterday's backup")
    done = relay_cli("db", "backup", str(target))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"backup failed: {target} already exists; pass --force to replace it\n"
    assert target.read_bytes() == b"yesterday's backup"
    done = relay_cli("db", "backup", str(target), "--force")
    assert done.returncode == 0, done.stderr
    assert sqlite3.connect(target).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_backup_command_refuses_missing_folders_unless_forced(
    db_path: Path, tmp_path: Path
) -> None:
    """A PATH in a folder that does not exist is refused (nothing created); --force creates it."""
    sqlite3.connect(db_path).close()
    target = tmp_path / "no" / "such" / "relay.db"
    done = relay_cli("db", "backup", str(target))
    assert done.returncode == 1
    assert done.stderr == (
        f"backup failed: folder {target.parent} does not exist; create it or pass --force\n"
    )
    assert not (tmp_path / "no").exists()
    assert relay_cli("db", "backup", str(target), "--force").returncode == 0
    assert target.is_file()


def test_backup_refuses_bad_targets(db_path: Path, tmp_path: Path) -> None:
    """No source file, the live database itself, or a directory as PATH are refused."""
    with pytest.raises(BackupError, match="no database file"):
        backup_database(db_path, tmp_path / "copy.db")
    sqlite3.connect(db_path).close()
    with pytest.raises(BackupError, match="live database itself"):
        backup_database(db_path, db_path)
    with pytest.raises(BackupError, match="is a directory"):
        backup_database(db_path, tmp_path)


def test_backup_needs_a_supported_database_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DATABASE_URL scheme no backend has is a clear error, not a traceback."""
    monkeypatch.setenv("DATABASE_URL", "mysql://db.example/relay")
    assert cli.main(["db", "backup", str(tmp_path / "copy.db")]) == 1
    assert capsys.readouterr().err == (
        "backup failed: unsupported DATABASE_URL scheme 'mysql';"
        " backups support sqlite, postgresql, postgres\n"
    )
