"""`assets prune` and `purge` on the S3 file store (moto's S3 API server on 127.0.0.1).

The tasks are made through the storage API on a real SQLite file, their copies uploaded to a
bucket of their own; the commands run through `cli.main` as a user runs them. An object cannot
be backdated, so the commands' clock runs an hour ahead: every object is then older than the
"recently reused" guard (a minute), as an old file would be.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.cli import ops as cli_ops
from service.domain.records import Asset
from service.files.s3 import S3AssetStore
from service.storage.sqlite import SQLiteStorage
from tests.doubles import ManualClock
from tests.s3server import S3Server
from tests.unit.test_cli_ops import LONG_AGO, Ops, finish, make_key, new_task, run_cli

SHARED = b"a file an old and a recent task both produced"
ALONE = b"a file only an old task produced"


@pytest.fixture(name="s3", scope="module")
def _s3() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(name="bucket")
def _bucket(s3: S3Server) -> str:
    return s3.new_bucket()


@pytest.fixture(name="cli_env", autouse=True)
def _cli_env(tmp_path: Path, s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands use this test's database and bucket, and a clock an hour ahead."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'relay.db'}")
    monkeypatch.setenv("ASSET_DIR", str(tmp_path / "assets"))
    monkeypatch.setenv("ASSET_STORE", f"s3://{bucket}/results")
    monkeypatch.setenv("GRSAI_API_KEY", "sk-test")
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli_ops, "SystemClock", lambda: ManualClock(time.time() + 3600))


@pytest.fixture(name="storage")
async def _storage(tmp_path: Path) -> AsyncIterator[Ops]:
    storage = Ops(str(tmp_path / "relay.db"))
    await storage.open()
    yield storage
    await storage.close()


@pytest.fixture(name="store")
async def _store(bucket: str, tmp_path: Path) -> AsyncIterator[S3AssetStore]:
    store = S3AssetStore(f"s3://{bucket}/results", tmp_path / "assets")
    await store.open()
    yield store
    await store.close()


async def store_copy(
    storage: SQLiteStorage, store: S3AssetStore, task_id: str, data: bytes, at: float
) -> str:
    """Upload `data` and record it as the task's stored copy of result 0."""
    staged = store.staging_file()
    staged.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    await store.put(staged, sha)
    url = f"https://up.example/{task_id}.png"
    asset = Asset(task_id, 0, url, "stored", 1, None, None, sha, "image/png", len(data))
    asset.stored_at = at
    await storage.save_asset(asset, at)
    return sha


@dataclass
class Files:
    """The hashes of the file only an old task used and of the one a new task shares."""

    alone: str
    shared: str


@pytest.fixture(name="files")
async def _files(storage: Ops, store: S3AssetStore) -> Files:
    """Old task A (its own file), old task B and new task C (one shared file)."""
    now = time.time()
    key = await make_key(storage, "alpha")
    for name, at in (("a", LONG_AGO), ("b", LONG_AGO), ("c", now)):
        await new_task(storage, key, name, at=at)
        await finish(
            storage, f"task_{name}", at, "succeeded", f"https://up.example/task_{name}.png"
        )
    alone = await store_copy(storage, store, "task_a", ALONE, LONG_AGO)
    shared = await store_copy(storage, store, "task_b", SHARED, LONG_AGO)
    await store_copy(storage, store, "task_c", SHARED, now)
    return Files(alone, shared)


async def stored(store: S3AssetStore) -> set[str]:
    """The hashes in the bucket."""
    return {sha async for sha in store.iter_hashes()}


async def test_prune_deletes_objects_no_task_refers_to(
    files: Files, store: S3AssetStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """`assets prune` retires the old copies and deletes the object only they used."""
    assert await run_cli("assets", "prune", "--older-than", "30d", "--dry-run") == 0
    assert "would remove 1 files" in capsys.readouterr().out
    assert await stored(store) == {files.alone, files.shared}
    assert await run_cli("assets", "prune", "--older-than", "30d") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("retired 2 copies of tasks completed before ")
    assert out[1] == "removed 1 files no remaining task refers to"
    assert await stored(store) == {files.shared}
    assert await store.size(files.shared) == len(SHARED)


async def test_purge_deletes_objects_of_purged_tasks(
    files: Files, store: S3AssetStore, storage: Ops, capsys: pytest.CaptureFixture[str]
) -> None:
    """`purge` deletes the old tasks, then the object no remaining task refers to."""
    assert await run_cli("purge", "--older-than", "30d") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("deleted 2 tasks completed before ")
    assert out[-1] == "removed 1 files no remaining task refers to"
    assert await stored(store) == {files.shared}
    assert [t.id for t in await storage.list_all_tasks(limit=10)] == ["task_c"]


async def test_prune_with_the_store_down_says_which_setting(
    files: Files, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bucket that does not exist fails the command with exit 1, naming ASSET_STORE."""
    monkeypatch.setenv("ASSET_STORE", f"s3://missing-{os.getpid()}-bucket/results")
    assert await run_cli("assets", "prune", "--older-than", "30d") == 1
    assert "ASSET_STORE" in capsys.readouterr().err
