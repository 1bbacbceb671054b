"""Demo mode: no GrsAI key, so run against the built-in simulator on loopback.

Demo mode keeps one API key across restarts. Its secret is saved beside the database in a file
only the owner may read (`<database>.demo-key`, never in the repository): the key is flagged
`demo`, so it works only while the relay runs in demo mode, where it can spend nothing but the
simulator's time. A saved key that is missing, revoked or no longer a demo key is replaced, and
any other demo key is revoked, so one demo key is active at a time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import uvicorn

from service.cli.keys import add_key
from service.cli.ops import with_storage
from service.cli.preflight import listen
from service.clock import SystemClock
from service.domain.credentials import api_key_well_formed, hash_secret
from service.settings import Settings
from service.simulator import SimulatorConfig
from service.simulator.app import simulator_server
from service.storage import Storage, sqlite_path

DEMO_UPSTREAM_KEY = "sk-demo-simulator"  # the local simulator's key, not a secret
SIMULATOR_THREAD = "grsai-simulator"
SIMULATOR_LOGGER = "grsai_relay.simulator"


class SimulatorLabel(logging.Filter):
    """Names the in-process simulator's uvicorn lines as the simulator's, not the relay's."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Relabel records logged from the simulator's thread; never drops one."""
        if record.threadName == SIMULATOR_THREAD:
            record.name = SIMULATOR_LOGGER
        return True


class EmbeddedSimulator:
    """The demo's simulator, served by a thread of this process until `stop`."""

    def __init__(self, url: str, server: uvicorn.Server, thread: threading.Thread) -> None:
        self.url, self._server, self._thread = url, server, thread

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread: a server thread still running while the
        interpreter shuts down can crash it (a demo relay once died of SIGSEGV on SIGTERM)."""
        self._server.should_exit = True
        self._thread.join(timeout)


def start_simulator(step_interval: float = 1.0) -> EmbeddedSimulator:
    """Serve the simulator from a daemon thread on a free loopback port."""
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = SimulatorConfig(api_key=DEMO_UPSTREAM_KEY, step_interval=step_interval)
    server = simulator_server("127.0.0.1", port, config, embedded=True)
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, SimulatorLabel) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(SimulatorLabel())
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=SIMULATOR_THREAD, daemon=True
    )
    thread.start()
    return EmbeddedSimulator(f"http://127.0.0.1:{port}", server, thread)


def own_url(host: str, port: int) -> str:
    """The demo relay's address, as it tells clients and GrsAI's simulator."""
    own_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104  # mapping a wildcard bind to loopback
    return f"http://{own_host}:{port}"


def demo_settings(settings: Settings, simulator_url: str, host: str, port: int) -> Settings:
    """Point the relay at the simulator; callbacks come back over loopback."""
    public = settings.public_base_url or own_url(host, port)
    return settings.model_copy(
        update={
            "grsai_api_key": DEMO_UPSTREAM_KEY,
            "grsai_base_url": simulator_url,
            "public_base_url": public,
            "fetch_allow_networks": "127.0.0.1/32",  # the simulator serves result files here
            # a local receiver for signed callbacks is the point of a demo
            "delivery_allow_networks": settings.delivery_allow_networks or "127.0.0.0/8",
        }
    )


def demo_key_file(settings: Settings) -> Path:
    """Where the demo key's secret is kept: beside the SQLite file it belongs to, or (a server
    database) beside the stored files, named after the database."""
    url = settings.database_url
    if url.startswith("sqlite:"):
        return Path(f"{sqlite_path(url)}.demo-key")
    tag = hashlib.sha256(url.encode()).hexdigest()[:12]
    return Path(settings.asset_dir).absolute().parent / f"demo-key-{tag}"


async def demo_key(settings: Settings) -> tuple[str, str]:
    """The demo API key and its signing secret: the saved one if still valid, else a new one."""
    path = demo_key_file(settings)
    storage = await with_storage(settings)
    try:
        saved = await _saved_key(storage, path)
        if saved is not None:
            return saved
        key, secret, signing = await add_key(storage, "demo", demo=True)
        now = SystemClock().now()
        for other in await storage.list_api_keys():
            if other.demo and other.revoked_at is None and other.id != key.id:
                await storage.revoke_api_key(other.id, now)
        _save(path, secret)
        return secret, signing
    finally:
        await storage.close()


def _read(path: Path) -> str | None:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return secret if api_key_well_formed(secret) else None


async def _saved_key(storage: Storage, path: Path) -> tuple[str, str] | None:
    secret = _read(path)
    if secret is None:
        return None
    key = await storage.api_key_by_hash(hash_secret(secret))
    if key is None or not key.demo:
        return None
    signing = await storage.signing_secrets(key.id, SystemClock().now())
    return (secret, signing[0]) if signing else None


def _save(path: Path, secret: str) -> None:
    """Write the secret to `path` (mode 0600) atomically."""
    staged = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    staged.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secret + "\n")
    os.replace(staged, path)


def banner(settings: Settings, api_key: str, signing: str, key_file: Path) -> str:
    """The loud demo-mode notice with the key, its signing secret and ready-to-paste curls."""
    base = settings.public_base_url
    line = "=" * 78
    return f"""{line}
  DEMO MODE: GRSAI_API_KEY is not set, so grsai-relay runs against its built-in
  GrsAI simulator at {settings.grsai_base_url} (nothing leaves this machine).
  Database: {settings.database_url}
  Demo API key:   {api_key}
  Signing secret: {signing}
    (of the signed callbacks to your callback_url; loopback callback URLs are allowed here)
  The key is kept in {key_file} and reused on every demo start; it works
  only in demo mode, never once GRSAI_API_KEY is set.

  curl -s -X POST {base}/v1/tasks \\
    -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\
    -d '{{"model": "nano-banana-fast", "prompt": "a lighthouse at dusk"}}'
  curl -s {base}/v1/tasks -H 'Authorization: Bearer {api_key}'
{line}"""
