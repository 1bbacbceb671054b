"""Demo mode: no GrsAI key, so run against the built-in simulator on loopback."""

from __future__ import annotations

import socket
import threading

from service.settings import Settings
from service.simulator import SimulatorConfig
from service.simulator.app import simulator_server

DEMO_UPSTREAM_KEY = "sk-demo-simulator"  # the local simulator's key, not a secret


def bound_socket(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to host:port (port 0 picks a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def start_simulator(step_interval: float = 1.0) -> str:
    """Serve the simulator from a daemon thread on a free loopback port; return its base URL."""
    sock = bound_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = SimulatorConfig(api_key=DEMO_UPSTREAM_KEY, step_interval=step_interval)
    server = simulator_server("127.0.0.1", port, config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="grsai-simulator", daemon=True
    )
    thread.start()
    return f"http://127.0.0.1:{port}"


def demo_settings(settings: Settings, simulator_url: str, host: str, port: int) -> Settings:
    """Point the relay at the simulator; callbacks come back over loopback."""
    own_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104  # mapping a wildcard bind to loopback
    public = settings.public_base_url or f"http://{own_host}:{port}"
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


def banner(settings: Settings, api_key: str, host: str, port: int) -> str:
    """The loud demo-mode notice with a ready-to-paste curl command."""
    base = settings.public_base_url or f"http://{host}:{port}"
    line = "=" * 78
    return f"""{line}
  DEMO MODE: GRSAI_API_KEY is not set, so grsai-relay runs against its built-in
  GrsAI simulator at {settings.grsai_base_url} (nothing leaves this machine).
  Database: {settings.database_url}
  Demo API key (shown once): {api_key}

  curl -s -X POST {base}/v1/tasks \\
    -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\
    -d '{{"model": "nano-banana-fast", "prompt": "a lighthouse at dusk"}}'
  curl -s {base}/v1/tasks -H 'Authorization: Bearer {api_key}'
{line}"""
