"""`serve --tunnel`: a real relay with a fake `cloudflared` on PATH that forwards through an HTTPS
"edge", so GrsAI's callbacks, the self-check probe, drops and returns all cross a real tunnel."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import auth, wait_for_task
from tests.e2e.harness import ROOT, RelayProcess, free_port
from tests.e2e.tls import EdgeCertificates, make_certificates

pytestmark = [pytest.mark.e2e, pytest.mark.no_database]

FAKE = Path(__file__).with_name("fake_cloudflared.py")
READY = re.compile(r"^ready (\S+)$", re.MULTILINE)


@pytest.fixture(name="certs")
def _certs(tmp_path: Path) -> EdgeCertificates:
    return make_certificates(tmp_path)


@pytest.fixture(name="tool_dir")
def _tool_dir(tmp_path: Path) -> Path:
    """A folder holding an executable `cloudflared` that runs the fake."""
    folder = tmp_path / "bin"
    folder.mkdir()
    tool = folder / "cloudflared"
    tool.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    tool.chmod(0o755)
    return folder


def tunnel_env(
    tmp_path: Path, certs: EdgeCertificates, tools: Path | None, **extra: str
) -> dict[str, str]:
    """A demo-mode relay's environment with the fake on PATH and the test CA trusted."""
    path = os.environ.get("PATH", "")
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path}/relay.db",
        "ASSET_DIR": str(tmp_path / "assets"),
        "PATH": f"{tools}:{path}" if tools else _path_without_cloudflared(path),
        "SSL_CERT_FILE": str(certs.ca),
        "FAKE_CF_CERT": str(certs.cert),
        "FAKE_CF_KEY": str(certs.key),
        "FAKE_CF_PIDFILE": str(tmp_path / "cloudflared.pid"),
        "TUNNEL_START_TIMEOUT": "20",
        "CALLBACK_SILENCE": "600",  # only the tunnel's own signals may move tasks to polling
        **extra,
    }


def _path_without_cloudflared(path: str) -> str:
    return ":".join(p for p in path.split(":") if p and not (Path(p) / "cloudflared").exists())


async def wait_for_line(relay: RelayProcess, pattern: str, within: float = 30.0) -> re.Match[str]:
    """The first match of `pattern` in what the relay printed."""
    deadline = asyncio.get_running_loop().time() + within
    while (found := re.search(pattern, relay.logs(), re.MULTILINE)) is None:
        assert asyncio.get_running_loop().time() < deadline, f"no {pattern!r} in:\n{relay.logs()}"
        await asyncio.sleep(0.1)
    return found


def fake_pid(env: dict[str, str]) -> int:
    """The fake cloudflared's process id."""
    return int(Path(env["FAKE_CF_PIDFILE"]).read_text())


def demo_key(tmp_path: Path) -> str:
    """The key demo mode saved beside its SQLite file."""
    return (tmp_path / "relay.db.demo-key").read_text().strip()


def run_serve(
    env: dict[str, str], *args: str, within: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`grsai-relay serve ARGS` to its end (for the runs that must refuse to start)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GRSAI_", "PUBLIC_"))}
    full.update(env, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "service", "serve", "--port", str(free_port()), *args]
    return subprocess.run(
        command, env=full, capture_output=True, text=True, timeout=within, check=False
    )


async def test_callbacks_and_the_probe_come_through_a_cloudflared_tunnel(
    tmp_path: Path, certs: EdgeCertificates, tool_dir: Path
) -> None:
    """`ready <url>` names the quick tunnel's hostname from the metrics server (not the
    api.trycloudflare.com of its error line), the probe comes back, and tasks finish by
    callbacks sent through the tunnel."""
    relay = RelayProcess(
        tmp_path, tunnel_env(tmp_path, certs, tool_dir), serve_args=("--tunnel", "cloudflared")
    ).start()
    try:
        public = (await wait_for_line(relay, READY.pattern)).group(1)
        assert public.startswith("https://127.0.0.1:")
        assert "trycloudflare" not in public
        trusting = ssl.create_default_context(cafile=certs.ca)
        async with httpx.AsyncClient(verify=trusting, timeout=30) as client:
            answer = await client.get(f"{public}/healthz")
            assert answer.status_code == 200
            await wait_for_line(relay, r"public URL check: .* reaches this relay")
            ready = (await client.get(f"{relay.url}/readyz")).json()["checks"]["public_url"]
            assert ready == {"status": "ok", "url": public, "tunnel": "cloudflared", "probe": "ok"}
            key = demo_key(tmp_path)
            body = {"model": "nano-banana-fast", "prompt": "a lighthouse"}
            created = await client.post(f"{public}/v1/tasks", json=body, headers=auth(key))
            assert created.status_code == 202, created.text
            task = await wait_for_task(client, relay, key, created.json()["id"])
        assert task["status"] == "succeeded"
        sources = relay.query("SELECT source FROM events WHERE task_id = ?", (task["id"],))
        assert ("callback",) in sources
    finally:
        assert relay.terminate() == 0


async def test_a_dropped_tunnel_moves_open_tasks_to_polling_at_once(
    tmp_path: Path, certs: EdgeCertificates, tool_dir: Path
) -> None:
    """When the tunnel drops the relay says so, open callback-mode tasks switch to polling at
    once (CALLBACK_SILENCE is ten minutes here) and still finish; it says when it is back."""
    env = tunnel_env(tmp_path, certs, tool_dir)
    relay = RelayProcess(tmp_path, env, serve_args=("--tunnel", "cloudflared")).start()
    try:
        public = (await wait_for_line(relay, READY.pattern)).group(1)
        key = demo_key(tmp_path)
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": "nano-banana-fast", "prompt": "slow fox [sim:delay=6]"}
            created = await client.post(f"{relay.url}/v1/tasks", json=body, headers=auth(key))
            assert created.status_code == 202, created.text
            task_id = created.json()["id"]
            assert relay.query("SELECT mode FROM tasks WHERE id = ?", (task_id,)) == [("callback",)]
            pid = fake_pid(env)
            os.kill(pid, signal.SIGUSR1)  # the fake loses its connections to the edge
            await wait_for_line(relay, r"^tunnel down: no connection to Cloudflare$")
            await wait_for_line(relay, r"switched to polling")
            assert relay.query("SELECT mode FROM tasks WHERE id = ?", (task_id,)) == [("poll",)]
            checks = (await client.get(f"{relay.url}/readyz")).json()
            assert checks["status"] == "ready"
            assert checks["checks"]["public_url"]["status"] == "warning"
            task = await wait_for_task(client, relay, key, task_id)
            assert task["status"] == "succeeded"
            os.kill(pid, signal.SIGUSR2)
            await wait_for_line(relay, rf"^tunnel up {re.escape(public)}$")
    finally:
        assert relay.terminate() == 0


def test_without_cloudflared_serve_says_so_in_one_line_and_exits_1(
    tmp_path: Path, certs: EdgeCertificates
) -> None:
    """No binary on PATH: one line naming what is missing, exit 1, nothing served."""
    done = run_serve(tunnel_env(tmp_path, certs, None), "--tunnel", "cloudflared")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        line for line in done.stderr.strip().splitlines() if "cloudflared binary on PATH" in line
    ]
    assert "ready" not in done.stdout


def test_a_tunnel_that_never_comes_up_ends_at_the_timeout(
    tmp_path: Path, certs: EdgeCertificates, tool_dir: Path
) -> None:
    """cloudflared runs but never connects: after TUNNEL_START_TIMEOUT, one line and exit 1."""
    env = tunnel_env(tmp_path, certs, tool_dir, FAKE_CF_MODE="never", TUNNEL_START_TIMEOUT="2")
    done = run_serve(env, "--tunnel", "cloudflared")
    assert done.returncode == 1
    assert "did not bring a tunnel up within 2 s (no connection to Cloudflare)" in done.stderr
    assert "ready" not in done.stdout


def test_a_cloudflared_that_crashes_is_reported_with_its_output(
    tmp_path: Path, certs: EdgeCertificates, tool_dir: Path
) -> None:
    """cloudflared exits at once: its exit code and last lines, exit 1."""
    done = run_serve(
        tunnel_env(tmp_path, certs, tool_dir, FAKE_CF_MODE="crash"), "--tunnel", "cloudflared"
    )
    assert done.returncode == 1
    assert "cloudflared exited with code 1; its last output:" in done.stderr


async def test_poll_fallback_serves_without_a_public_url(
    tmp_path: Path, certs: EdgeCertificates
) -> None:
    """`--tunnel-fallback poll`: the missing tool is reported and the relay serves in poll
    mode, saying `ready` with its local URL."""
    env = tunnel_env(tmp_path, certs, None)
    relay = RelayProcess(
        tmp_path, env, serve_args=("--tunnel", "cloudflared", "--tunnel-fallback", "poll")
    ).start()
    try:
        assert (await wait_for_line(relay, READY.pattern)).group(1) == relay.url
        assert "serving in poll mode" in relay.logs()
        async with httpx.AsyncClient(timeout=30) as client:
            key = demo_key(tmp_path)
            body = {"model": "nano-banana-fast", "prompt": "a fox"}
            created = await client.post(f"{relay.url}/v1/tasks", json=body, headers=auth(key))
            assert created.status_code == 202, created.text
            assert relay.query("SELECT mode FROM tasks") == [("poll",)]
            task = await wait_for_task(client, relay, key, created.json()["id"])
        assert task["status"] == "succeeded"
    finally:
        assert relay.terminate() == 0


def test_ngrok_without_its_sdk_and_tunnels_with_workers_are_refused(
    tmp_path: Path, certs: EdgeCertificates
) -> None:
    """`--tunnel ngrok` without the SDK installed says how to install it (exit 1); a tunnel
    with several workers is a usage error (exit 2)."""
    env = tunnel_env(tmp_path, certs, None, NGROK_AUTHTOKEN="x")
    done = run_serve(env, "--tunnel", "ngrok")
    assert done.returncode == 1
    assert "pip install 'grsai-relay[ngrok]'" in done.stderr
    server = {**env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/refused-before-use"}
    done = run_serve(server, "--tunnel", "cloudflared", "--workers", "2")
    assert done.returncode == 2
    assert "--tunnel runs in one process" in done.stderr
