"""Retiring old copies: `prune_assets` in storage and the `grsai-relay assets prune` command."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.cli import main as cli
from service.cli import ops as cli_ops
from service.clock import ManualClock
from service.settings import Settings
from tests.unit.conftest import FakeGrsai, Relay
from tests.unit.test_assets_copier import succeeded
from tests.unit.test_assets_download import FILES, FileHost
from tests.unit.test_assets_results import copy_all, open_relay
from tests.unit.test_assets_sniff import png

SHARED = png(4, 4, seed=1)  # one file two tasks produced
ALONE = png(4, 4, seed=2)  # a file only the old task C produced
LONG_AGO = 1_000_000_000.0  # an mtime no "recently reused" guard protects
CENTURY = 100 * 365 * 86400.0


def sha(data: bytes) -> str:
    """The hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Tasks:
    """Two old tasks (A shares its file with B, C's file is its own) and a newer task B."""

    old_a: str
    old_c: str
    new_b: str
    cutoff: float


@pytest.fixture(name="files")
def _files() -> FileHost:
    return FileHost()


@pytest.fixture(name="relay")
async def _relay(
    tmp_path: Path, clock: ManualClock, grsai: FakeGrsai, files: FileHost
) -> AsyncIterator[Relay]:
    async with contextlib.AsyncExitStack() as stack:
        yield await open_relay(stack, tmp_path, clock, grsai, files)


@pytest.fixture(name="tasks")
async def _tasks(relay: Relay, files: FileHost) -> Tasks:
    """A and C complete now; B completes a century later (after any real cutoff)."""
    files.serve(f"https://{FILES}/a.png", SHARED)
    files.serve(f"https://{FILES}/b.png", SHARED)
    files.serve(f"https://{FILES}/c.png", ALONE)
    old_a = await succeeded(relay, f"https://{FILES}/a.png")
    old_c = await succeeded(relay, f"https://{FILES}/c.png")
    await copy_all(relay)
    cutoff = relay.clock.now() + 1.0
    relay.clock.advance(CENTURY)
    new_b = await succeeded(relay, f"https://{FILES}/b.png")
    await copy_all(relay)
    return Tasks(old_a, old_c, new_b, cutoff)


def file_of(relay: Relay, data: bytes) -> Path:
    """Where the store keeps `data`."""
    return relay.services.assets.path(sha(data))


def age_files(relay: Relay) -> None:
    """Make both files old enough that no "recently reused" guard keeps them."""
    for data in (SHARED, ALONE):
        os.utime(file_of(relay, data), (LONG_AGO, LONG_AGO))


async def result_status(relay: Relay, task_id: str) -> tuple[int, str | None]:
    """Status and error code of GET result 0."""
    response = await relay.client.get(f"/v1/tasks/{task_id}/results/0", headers=relay.auth())
    code = response.json()["error"]["code"] if response.status_code != 200 else None
    return response.status_code, code


async def test_prune_retires_old_copies_and_reports_orphans(relay: Relay, tasks: Tasks) -> None:
    """Copies of tasks completed before the cutoff are pruned; only unshared hashes are orphans."""
    count, orphans = await relay.storage.prune_assets(tasks.cutoff, 500, relay.clock.now())
    assert (count, orphans) == (2, [sha(ALONE)])
    for task_id in (tasks.old_a, tasks.old_c):
        job = await relay.storage.asset(task_id, 0)
        assert job is not None
        assert (job.status, job.error) == ("pruned", "removed after the retention period")
        entry = (await relay.task(task_id)).results[0]
        assert (entry["url"], entry["sha256"], entry["bytes"]) == (None, None, None)
        assert entry["asset"]["status"] == "pruned"
        assert await result_status(relay, task_id) == (404, "asset_pruned")
    kept = (await relay.task(tasks.new_b)).results[0]
    assert (kept["asset"]["status"], kept["sha256"]) == ("stored", sha(SHARED))
    assert await relay.storage.prune_assets(tasks.cutoff, 500, relay.clock.now()) == (0, [])


async def test_prune_works_in_batches(relay: Relay, tasks: Tasks) -> None:
    """A small limit prunes a batch at a time until nothing is left."""
    first = await relay.storage.prune_assets(tasks.cutoff, 1, relay.clock.now())
    second = await relay.storage.prune_assets(tasks.cutoff, 1, relay.clock.now())
    third = await relay.storage.prune_assets(tasks.cutoff, 1, relay.clock.now())
    assert [first[0], second[0], third[0]] == [1, 1, 0]
    assert sorted(first[1] + second[1]) == [sha(ALONE)]


async def test_prune_ignores_pending_and_failed_copies(relay: Relay, files: FileHost) -> None:
    """Only stored copies are retired; a failed one keeps its reason, a pending one its job."""
    files.serve(f"https://{FILES}/gone.png", b"", 403)
    failed = await succeeded(relay, f"https://{FILES}/gone.png")
    await copy_all(relay)
    pending = await succeeded(relay, f"https://{FILES}/later.png")
    relay.clock.advance(10.0)
    assert await relay.storage.prune_assets(relay.clock.now(), 500, relay.clock.now()) == (0, [])
    statuses = [(await relay.storage.asset(t, 0)) for t in (failed, pending)]
    assert [a.status if a else None for a in statuses] == ["failed", "pending"]


async def run_cli(*argv: str) -> int:
    """`grsai-relay ...` in a worker thread (it runs its own event loop)."""
    return await asyncio.to_thread(cli.main, list(argv))


@pytest.fixture(name="cli_env")
def _cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the command at the test relay's database and files, away from any `.env`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/t.db")
    monkeypatch.setenv("ASSET_DIR", str(tmp_path / "assets"))
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)  # keep test logging as is


@pytest.mark.usefixtures("cli_env")
async def test_prune_command_removes_orphan_files_only(
    relay: Relay, tasks: Tasks, capsys: pytest.CaptureFixture[str]
) -> None:
    """`assets prune --older-than 0s` retires A and C, deletes C's file, keeps the shared."""
    age_files(relay)
    assert await run_cli("assets", "prune", "--older-than", "0s") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("retired 2 copies of tasks completed before ")
    assert out[1:] == ["removed 1 files no remaining task refers to"]
    assert not file_of(relay, ALONE).exists()
    assert file_of(relay, SHARED).read_bytes() == SHARED
    assert await result_status(relay, tasks.old_a) == (404, "asset_pruned")
    assert await result_status(relay, tasks.old_c) == (404, "asset_pruned")
    assert await result_status(relay, tasks.new_b) == (200, None)


@pytest.mark.usefixtures("cli_env")
async def test_prune_command_keeps_a_recently_touched_orphan(
    relay: Relay, tasks: Tasks, capsys: pytest.CaptureFixture[str]
) -> None:
    """An orphan file written or reused within the last minute is not deleted."""
    assert await run_cli("assets", "prune", "--older-than", "0s") == 0
    assert capsys.readouterr().out.splitlines()[1] == "removed 0 files no remaining task refers to"
    assert file_of(relay, ALONE).exists()


@pytest.mark.usefixtures("cli_env")
async def test_prune_command_defaults_to_the_retention_setting(
    relay: Relay, tasks: Tasks, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --older-than, ASSET_RETENTION_DAYS sets the cutoff."""
    monkeypatch.setenv("ASSET_RETENTION_DAYS", str(1000 * 365))  # before task A existed
    assert await run_cli("assets", "prune") == 0
    assert capsys.readouterr().out.startswith("retired 0 copies of tasks completed before ")
    assert await result_status(relay, tasks.old_a) == (200, None)


@pytest.mark.usefixtures("cli_env")
async def test_prune_function_can_be_called_directly(relay: Relay, tasks: Tasks) -> None:
    """`prune(settings, seconds)` retires the same copies as the command."""
    assert await cli_ops.prune(Settings(), 0.0) == 0
    job = await relay.storage.asset(tasks.old_c, 0)
    assert job is not None
    assert job.status == "pruned"


@pytest.mark.usefixtures("cli_env")
async def test_prune_dry_run_prints_what_would_go_and_changes_nothing(
    relay: Relay, tasks: Tasks, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--dry-run` counts the copies and files the real run then removes, and removes none."""
    age_files(relay)
    assert await run_cli("assets", "prune", "--older-than", "0s", "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("would retire 2 copies of tasks completed before ")
    assert out[1:] == ["would remove 1 files no remaining task refers to"]
    assert file_of(relay, ALONE).exists()
    assert await result_status(relay, tasks.old_c) == (200, None)
    assert await run_cli("assets", "prune", "--older-than", "0s") == 0
    assert capsys.readouterr().out.splitlines()[1] == "removed 1 files no remaining task refers to"


async def test_prune_count_and_hash_in_use_after_prune(relay: Relay, tasks: Tasks) -> None:
    """The dry-run reads predict `prune_assets`: the count, and which files stay referred to."""
    storage = relay.storage
    assert await storage.prune_count(tasks.cutoff) == 2
    assert not await storage.hash_in_use_after_prune(sha(ALONE), tasks.cutoff)
    assert await storage.hash_in_use_after_prune(sha(SHARED), tasks.cutoff)  # B keeps it
    assert await storage.hash_in_use_after_prune(sha(ALONE), tasks.cutoff - CENTURY)
    assert (await storage.prune_assets(tasks.cutoff, 500, relay.clock.now()))[0] == 2
    assert await storage.prune_count(tasks.cutoff) == 0


@pytest.mark.parametrize("older_than", ["30", "0", "1.5", "30 days"])
def test_prune_refuses_a_duration_without_its_unit(
    older_than: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare number is a usage error (exit 2) that shows the accepted forms; nothing runs."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["assets", "prune", "--older-than", older_than])
    assert exited.value.code == 2
    assert "30d (days), 12h (hours), 90m (minutes) or 45s (seconds)" in capsys.readouterr().err
