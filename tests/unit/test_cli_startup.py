"""What every command settles before it runs: settings, the database path, the port.

Each runs the real `grsai-relay` in a subprocess, as a user would, and reads its exit code and
its one-line errors.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli.preflight import loopback_fetch_warning
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
UNWRITABLE = Path("/sys")  # sysfs: no one, root included, may create a file there
BAD = {
    "SQLITE_SYNCHRONOUS": "normall",
    "PORT": "abc",
    "POLL_BACKOFF": "-1",
    "MODEL_CATALOG": "{bad",
    "LOG_LEVEL": "verbose",
}
COMMANDS = [
    ["serve"],
    ["keys", "list"],
    ["keys", "create", "--name", "x"],
    ["tasks", "list"],
    ["assets", "prune", "--dry-run"],
    ["purge", "--older-than", "30d", "--dry-run"],
    ["db", "migrate"],
    ["db", "backup", "copy.db"],
]


@pytest.fixture(name="workdir")
def _workdir(tmp_path: Path) -> Path:
    """An empty folder to run in: the default database would land in its ./data."""
    work = tmp_path / "work"
    work.mkdir()
    return work


def run(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`grsai-relay ARGS` in `workdir` with only these settings (no GrsAI key unless given)."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=workdir,
        env={**_without_settings(os.environ), "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _without_settings(environ: os._Environ[str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k.lower() not in Settings.model_fields}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_bad_settings_are_one_line_each_naming_the_variable(
    workdir: Path, command: list[str]
) -> None:
    """Exit 2, one line per bad setting (VARIABLE='value': what is allowed), no traceback."""
    done = run(workdir, *command, **BAD)
    assert done.returncode == 2
    assert done.stdout == ""
    assert sorted(done.stderr.splitlines()) == [
        "bad setting LOG_LEVEL='verbose': should be one of debug, info, warning, error, critical",
        "bad setting MODEL_CATALOG='{bad': must be a JSON object of model name -> path,"
        ' e.g. {"my-model": "/v1/draw/nano-banana"}'
        " (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        "bad setting POLL_BACKOFF='-1': should be greater than or equal to 1",
        "bad setting PORT='abc': should be a valid integer, unable to parse string as an integer",
        "bad setting SQLITE_SYNCHRONOUS='normall': should be one of OFF, NORMAL, FULL, EXTRA",
    ]
    assert list(workdir.iterdir()) == []


def test_only_the_bad_setting_is_reported(workdir: Path) -> None:
    """Good settings around a bad one are not mentioned (nor is the GrsAI key echoed)."""
    done = run(workdir, "keys", "list", GRSAI_API_KEY="sk-secret", PORT="99999")
    assert done.returncode == 2
    assert done.stderr == "bad setting PORT='99999': should be less than or equal to 65535\n"


def test_choices_are_case_insensitive() -> None:
    """LOG_LEVEL=DEBUG, SQLITE_SYNCHRONOUS=full and LOG_FORMAT=JSON are fine as written."""
    settings = Settings(log_level="DEBUG", sqlite_synchronous="full", log_format="JSON")
    assert (settings.log_level, settings.sqlite_synchronous, settings.log_format) == (
        "debug", "FULL", "json",
    )  # fmt: skip


@pytest.mark.parametrize("grsai_key", ["", "sk-real"], ids=["demo", "with-key"])
@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["keys", "list"]], ids=" ".join)
def test_an_unwritable_database_folder_is_one_line(
    workdir: Path, grsai_key: str, command: list[str]
) -> None:
    """The database path and the reason, in one line, exit 1; no demo key, no banner."""
    database = UNWRITABLE / "grsai-relay-test.db"
    done = run(workdir, *command, GRSAI_API_KEY=grsai_key, DATABASE_URL=f"sqlite:///{database}")
    assert (done.returncode, done.stdout) == (1, "")
    [line] = done.stderr.splitlines()
    prefix = f"grsai-relay: cannot open the database {database}: cannot write in {UNWRITABLE}: "
    assert line.startswith(prefix)
    assert line.removeprefix(prefix) in ("Permission denied", "Read-only file system")


@pytest.mark.parametrize("grsai_key", ["", "sk-real"], ids=["demo", "with-key"])
def test_a_database_folder_that_cannot_be_made_is_one_line(workdir: Path, grsai_key: str) -> None:
    """A file where the folder should be: the folder and the reason, in one line, exit 1."""
    (workdir / "data").write_text("a file, not a folder")
    done = run(workdir, "serve", "--port", "0", GRSAI_API_KEY=grsai_key)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"grsai-relay: cannot create the database folder {workdir / 'data'}: a file is in the way\n"
    )


@pytest.fixture(name="taken_port")
def _taken_port() -> Iterator[int]:
    """A port another process (this test) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("grsai_key", ["", "sk-real"], ids=["demo", "with-key"])
def test_serve_on_a_port_in_use_fails_first_creating_nothing(
    workdir: Path, taken_port: int, grsai_key: str
) -> None:
    """One line, exit 1, before any database, demo key, banner or simulator exists."""
    done = run(workdir, "serve", "--port", str(taken_port), GRSAI_API_KEY=grsai_key)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"grsai-relay: cannot listen on 127.0.0.1:{taken_port}: Address already in use"
        " (another process listens there: stop it, or pick another --port)\n"
    )
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(
    ("base_url", "allowed", "warned"),
    [
        ("http://127.0.0.1:8001", "", "127.0.0.1/32"),
        ("http://localhost:8001", "", "127.0.0.1/32"),
        ("http://[::1]:8001", "", "::1/128"),
        ("http://10.0.0.5:8001", "", "10.0.0.5/32"),
        ("http://127.0.0.1:8001", "127.0.0.0/8", None),
        ("http://127.0.0.1:8001", "10.0.0.0/8", "127.0.0.1/32"),
        ("https://grsaiapi.com", "", None),
        ("http://93.184.216.34", "", None),
    ],
)
def test_serve_warns_when_the_simulator_files_would_be_refused(
    base_url: str, allowed: str, warned: str | None
) -> None:
    """A non-public GRSAI_BASE_URL outside FETCH_ALLOW_NETWORKS: a warning naming the fix."""
    settings = Settings(grsai_api_key="sk", grsai_base_url=base_url, fetch_allow_networks=allowed)
    warning = loopback_fetch_warning(settings)
    if warned is None:
        assert warning is None
    else:
        assert warning is not None
        assert warning.startswith(f"GRSAI_BASE_URL {base_url} is not a public address")
        assert warning.endswith(f"set FETCH_ALLOW_NETWORKS={warned}")


@pytest.mark.parametrize(
    ("args", "env", "asked_by"),
    [
        (["--workers", "2"], {}, "--workers 2"),
        ([], {"WORKERS": "3"}, "WORKERS=3"),
        (["--workers", "2"], {"WORKERS": "1"}, "--workers 2"),
    ],
    ids=["flag", "setting", "flag-over-setting"],
)
@pytest.mark.parametrize("grsai_key", ["", "sk-real"], ids=["demo", "with-key"])
def test_several_workers_on_sqlite_are_refused_first_creating_nothing(
    workdir: Path, args: list[str], env: dict[str, str], asked_by: str, grsai_key: str
) -> None:
    """One line naming what asked and PostgreSQL as the way, exit 2, before anything exists."""
    done = run(workdir, "serve", "--port", "0", *args, GRSAI_API_KEY=grsai_key, **env)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"grsai-relay: {asked_by} asks for {asked_by[-1]} processes, but SQLite is written by"
        " one process: run one, or use PostgreSQL (DATABASE_URL=postgresql://...) for more\n"
    )
    assert list(workdir.iterdir()) == []


def test_workers_must_be_positive(workdir: Path) -> None:
    """WORKERS=0 is a bad setting like any other; `--workers 0` is refused by the parser."""
    done = run(workdir, "serve", WORKERS="0")
    assert done.returncode == 2
    assert done.stderr == "bad setting WORKERS='0': should be greater than or equal to 1\n"
    done = run(workdir, "serve", "--workers", "0")
    assert done.returncode == 2
    assert "--workers: must be at least 1" in done.stderr
