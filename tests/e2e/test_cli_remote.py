"""The `grsai-relay` console script against a real relay and the simulator: submit --wait
--out, tasks watch, a failing task, a relay killed mid-watch, and doctor.

Each command runs as a user runs it (the installed console script, in a subprocess); its exit
code, its one-line errors and the files it saves are what the tests read.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RelayFactory, auth
from tests.e2e.harness import RelayProcess, SimulatorServer

# The console script over HTTP, above the storage (doctor's database checks are SQLite's file):
# it runs once, on SQLite.
pytestmark = pytest.mark.no_database

HANG = 120  # a hang guard, never a measure
HELD = "[sim:delay=600] a lighthouse"  # the simulator holds it until the test finishes it
QUIET = {"CALLBACK_SILENCE": "600"}  # no poll finishes a held task behind the test's back
MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF", b"GIF8")


def _script() -> list[str]:
    """The installed console script beside this interpreter, else `python -m service`."""
    script = Path(sys.executable).with_name("grsai-relay")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service"]


def _env(relay: RelayProcess, key: str, **extra: str) -> dict[str, str]:
    return {**relay._env(), "RELAY_URL": relay.url, "RELAY_API_KEY": key, **extra}


def _run(
    relay: RelayProcess, key: str, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_script(), *args],
        cwd=relay.workdir,
        env=_env(relay, key, **extra),
        capture_output=True,
        text=True,
        check=False,
        timeout=HANG,
    )


def _watch(relay: RelayProcess, key: str, task_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*_script(), "tasks", "watch", task_id],
        cwd=relay.workdir,
        env=_env(relay, key),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _held_task(relay: RelayProcess, key: str) -> dict[str, str]:
    body = {"model": "nano-banana", "prompt": HELD}
    created = httpx.post(f"{relay.url}/v1/tasks", json=body, headers=auth(key), timeout=30)
    assert created.status_code == 202, created.text
    task: dict[str, str] = created.json()
    return task


def test_submit_wait_out_saves_the_result_images(start_relay: RelayFactory, tmp_path: Path) -> None:
    """submit --wait --out prints the id and the result URLs, saves real image files, exit 0;
    a second run into the same folder keeps the first files."""
    relay = start_relay()
    key = relay.create_key("cli")
    out = tmp_path / "out"
    args = (
        "submit",
        "--model",
        "gpt-image-1.5",
        "--prompt",
        "a lighthouse",
        "--param",
        "variants=2",
    )
    done = _run(relay, key, *args, "--wait", "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("task_")
    assert any(line.startswith(f"{relay.url}/v1/tasks/{lines[0]}/results/") for line in lines)
    files = sorted(out.iterdir())
    assert len(files) == 2  # variants=2: the --param value went as the number 2
    assert all(f.read_bytes().startswith(MAGIC) for f in files)
    assert "succeeded 100%" in done.stderr  # not a terminal: a line per change
    again = _run(relay, key, "tasks", "watch", lines[0], "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert len(list(out.iterdir())) == 2 * len(files)


def test_watch_follows_a_running_task_to_succeeded(
    start_relay: RelayFactory, simulator: SimulatorServer
) -> None:
    """tasks watch follows a held task, sees it finish when GrsAI completes it, exits 0."""
    relay = start_relay(**QUIET)
    key = relay.create_key("cli")
    task = _held_task(relay, key)
    watch = _watch(relay, key, task["id"])
    assert watch.stderr is not None
    first = watch.stderr.readline()  # the stream's first state: the watcher is attached
    assert task["id"] in first
    done = httpx.post(f"{simulator.url}/_sim/tasks/{task['upstream_id']}/complete", timeout=30)
    assert done.status_code == 200, done.text
    stdout, stderr = watch.communicate(timeout=HANG)
    assert watch.returncode == 0, stderr
    assert "succeeded 100%" in stderr
    assert f"/v1/tasks/{task['id']}/results/0" in stdout


def test_a_failing_task_exits_1_with_its_reason(start_relay: RelayFactory) -> None:
    """A task GrsAI fails ends submit --wait with exit 1 and its failure reason."""
    relay = start_relay()
    key = relay.create_key("cli")
    prompt = "[sim:fail=output_moderation] a lighthouse"
    done = _run(relay, key, "submit", "--model", "nano-banana", "--prompt", prompt, "--wait")
    assert done.returncode == 1, done.stderr
    assert "failed: output_moderation" in done.stderr


def test_a_relay_killed_mid_watch_is_a_clear_error(start_relay: RelayFactory) -> None:
    """Killing the relay while a watch follows a task ends the watch with one error line and
    exit 2 after its reconnects, never a traceback or a hang."""
    relay = start_relay(**QUIET)
    key = relay.create_key("cli")
    task = _held_task(relay, key)
    watch = _watch(relay, key, task["id"])
    assert watch.stderr is not None
    assert task["id"] in watch.stderr.readline()
    relay.kill()
    _, stderr = watch.communicate(timeout=HANG)
    assert watch.returncode == 2, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"grsai-relay: cannot reach the relay at {relay.url}")
    assert "gave up following" in last


@pytest.mark.parametrize("problem", ["none", "missing key", "no relay"])
def test_usage_problems_are_one_line(start_relay: RelayFactory, problem: str) -> None:
    """A bad model (the relay's JSON message), no key, or no relay: exit 2 with one line."""
    relay = start_relay()
    key = relay.create_key("cli")
    extra = {"RELAY_API_KEY": ""} if problem == "missing key" else {}
    if problem == "no relay":
        extra["RELAY_URL"] = "http://127.0.0.1:9"
    model = "no-such-model" if problem == "none" else "nano-banana"
    done = _run(relay, key, "submit", "--model", model, "--prompt", "x", **extra)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    expected = {
        "none": "422 validation_failed: unknown model",
        "missing key": "no API key",
        "no relay": "cannot reach the relay",
    }[problem]
    assert expected in done.stderr


def test_doctor_passes_against_a_healthy_relay(start_relay: RelayFactory) -> None:
    """Every check of a running relay with a good key, a database and a public URL that
    comes back: no FAIL line, exit 0."""
    relay = start_relay()
    done = _run(relay, "", "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    for name in ("grsai_key", "public_url", "database", "relay"):
        assert f"ok   {name}:" in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("setting", "failing"),
    [
        ({"GRSAI_API_KEY": "sk-not-this-one"}, "grsai_key"),
        ({"DATABASE_URL": "sqlite:////sys/grsai-relay/relay.db"}, "database"),
    ],
)
def test_doctor_fails_with_a_bad_key_or_a_dead_database(
    start_relay: RelayFactory, setting: dict[str, str], failing: str
) -> None:
    """A key GrsAI refuses, or a database path that cannot exist: a FAIL line, exit 1."""
    relay = start_relay()
    done = _run(relay, "", "doctor", **setting)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"FAIL {failing}:" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr
