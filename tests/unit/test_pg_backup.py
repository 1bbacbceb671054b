"""`db backup` on PostgreSQL: `pg_dump` to a verified custom-format file that `pg_restore`
brings back; without the tools, an error naming what to use.

The real tests dump a database of the local PostgreSQL server made with `open_storage` while it
stays open, and restore the file into a fresh database. Stand-in tools on PATH show what the
relay hands `pg_dump` (never the password on its command line).
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.cli import main as cli
from service.domain.transitions import Decision
from service.storage import BackupError, Event, Storage, backup_database, open_storage
from service.storage.postgres.backup import MISSING_TOOLS, redacted, without_password
from service.storage.postgres.migrations import LATEST
from tests import pgserver
from tests.contract.conftest import KEY, NOW, key_hash, make_task


@pytest.fixture(name="url")
def _url() -> Iterator[str]:
    """An empty database of this test's own."""
    with pgserver.fresh_database() as url:
        yield url


@pytest.fixture(name="copy_url")
def _copy_url() -> Iterator[str]:
    """A second empty database, to restore into."""
    with pgserver.fresh_database() as url:
        yield url


@pytest.fixture(name="storage")
async def _storage(url: str) -> AsyncIterator[Storage]:
    """The database opened (migrated) with one key and one running task with an event."""
    storage = open_storage(url)
    await storage.open()
    await storage.create_api_key(KEY, key_hash(KEY))
    await storage.insert_task(make_task(1))
    running = Decision("applied", {"status": "running", "progress": 40})
    await storage.apply("task_1", lambda _task: running, Event("task_1", "poll", NOW, b"{}"))
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture(name="cli_env", autouse=True)
def _cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in this test's folder, away from any `.env`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRSAI_API_KEY", "sk-test")


async def test_a_backup_of_the_live_database_restores_into_a_fresh_one(
    storage: Storage,
    url: str,
    copy_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`db backup PATH` dumps the open database to a private file; `pg_restore` into an empty
    database brings back the task, its event and the schema version."""
    monkeypatch.setenv("DATABASE_URL", url)
    target = tmp_path / "backups" / "relay.dump"
    target.parent.mkdir()
    assert await asyncio.to_thread(cli.main, ["db", "backup", str(target)]) == 0
    size = target.stat().st_size
    assert capsys.readouterr().out == (
        f"backed up {url} to {target}: {size} bytes, schema version {LATEST}, integrity ok\n"
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["relay.dump"]  # no temporary file
    restore = ["pg_restore", "--no-owner", f"--dbname={copy_url}", str(target)]
    await asyncio.to_thread(subprocess.run, restore, check=True, capture_output=True, timeout=120)
    restored = open_storage(copy_url)
    await restored.open()
    try:
        task = await restored.task("task_1")
        assert task is not None
        assert (task.status, task.progress, task.upstream_id) == ("running", 40, "up-1")
        assert [e.body for e in await restored.events("task_1")] == [b"{}"]
        assert await restored.schema_version() == LATEST
    finally:
        await restored.close()


async def test_a_database_never_migrated_is_copied_as_it_is(url: str, tmp_path: Path) -> None:
    """An empty database dumps and verifies too, as schema version 0 (a backup never migrates)."""
    made = await asyncio.to_thread(backup_database, url, tmp_path / "empty.dump")
    assert (made.path, made.schema_version, made.source) == (tmp_path / "empty.dump", 0, url)


def test_a_failed_dump_keeps_the_previous_backup(url: str, tmp_path: Path) -> None:
    """A database that does not exist: pg_dump's own words, the earlier file untouched, no
    temporary file left."""
    target = tmp_path / "relay.dump"
    target.write_bytes(b"yesterday's backup")
    missing = url.rsplit("/", 1)[0] + "/grsai_no_such_database"
    with pytest.raises(BackupError) as caught:
        backup_database(missing, target)
    assert str(caught.value).startswith("pg_dump failed (exit 1): pg_dump: error: connection")
    assert 'database "grsai_no_such_database" does not exist' in str(caught.value)
    assert target.read_bytes() == b"yesterday's backup"
    assert [p.name for p in tmp_path.iterdir()] == ["relay.dump"]


@pytest.mark.parametrize("missing", ["pg_dump", "pg_restore"])
def test_without_the_client_tools_the_error_says_what_to_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """Nothing is written; the error names the tool and the ways out (install it, or use the
    provider's managed snapshots)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in {"pg_dump", "pg_restore"} - {missing}:
        _fake_tool(tools / tool, "exit 0")
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(BackupError) as caught:
        backup_database("postgresql://relay@127.0.0.1:9/relay", tmp_path / "relay.dump")
    assert str(caught.value) == MISSING_TOOLS.format(tool=missing)
    assert f"{missing} is not on PATH" in str(caught.value)
    assert "managed snapshots" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def test_the_password_goes_to_pg_dump_in_its_environment_never_its_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ps` would show arguments: the password travels as PGPASSWORD; errors never show it."""
    tools = tmp_path / "bin"
    tools.mkdir()
    seen = tmp_path / "seen"
    _fake_tool(
        tools / "pg_dump",
        f'printf "%s\\n" "$@" > {seen}/argv; printf "%s" "$PGPASSWORD" > {seen}/password\n'
        'echo "pg_dump: error: rejected s3cr@t/pw" >&2; exit 1',
    )
    _fake_tool(tools / "pg_restore", "exit 0")
    seen.mkdir()
    monkeypatch.setenv("PATH", str(tools))
    url = "postgresql://relay:s3cr%40t%2Fpw@db.example:5433/relay?sslmode=require"
    with pytest.raises(BackupError) as caught:
        backup_database(url, tmp_path / "relay.dump")
    assert str(caught.value) == "pg_dump failed (exit 1): pg_dump: error: rejected ***"
    argv = (seen / "argv").read_text().splitlines()
    assert argv[-1] == "postgresql://relay@db.example:5433/relay?sslmode=require"
    assert not any("s3cr" in arg for arg in argv)
    assert (seen / "password").read_text() == "s3cr@t/pw"


@pytest.mark.parametrize(
    ("url", "bare", "password", "shown"),
    [
        ("postgresql://u:p@h/db", "postgresql://u@h/db", "p", "postgresql://u:***@h/db"),
        ("postgres://u@h:5432/db", "postgres://u@h:5432/db", None, "postgres://u@h:5432/db"),
        ("postgresql://:p%3A@h/db", "postgresql://h/db", "p:", "postgresql://:***@h/db"),
        ("postgresql:///db", "postgresql:///db", None, "postgresql:///db"),
    ],
)
def test_urls_lose_their_password(url: str, bare: str, password: str | None, shown: str) -> None:
    """The password comes out of the user part (decoded); what is shown masks it."""
    assert without_password(url) == (bare, password)
    assert redacted(url) == shown


def _fake_tool(path: Path, script: str) -> None:
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    assert os.access(path, os.X_OK)
