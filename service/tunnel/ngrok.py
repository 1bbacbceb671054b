"""`serve --tunnel ngrok`: a tunnel opened in-process with the ngrok Python SDK.

The SDK (`pip install 'grsai-relay[ngrok]'`, a native wheel) needs NGROK_AUTHTOKEN. Its session
reconnects by itself; it reports a lost connection through its disconnection handler and a
healthy one through heartbeats, which is all `status` reads. The SDK is injected (`sdk`), so tests
run a double of it: nothing here reaches the internet unless the real SDK is passed.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from service.tunnel.drivers import TunnelError

INSTALL = "pip install 'grsai-relay[ngrok]'"


def load_sdk() -> Any:
    """The ngrok SDK module, or a TunnelError saying how to install it."""
    try:
        return importlib.import_module("ngrok")
    except ImportError as exc:
        raise TunnelError(f"--tunnel ngrok needs the ngrok Python SDK: {INSTALL}") from exc


class NgrokTunnel:
    """An ngrok HTTP endpoint forwarding to the relay."""

    name = "ngrok"

    def __init__(self, sdk: Any, authtoken: str | None, domain: str | None = None) -> None:
        self._sdk = sdk
        self._authtoken = authtoken
        self._domain = domain
        self._session: Any = None
        self._listener: Any = None
        self._down: str | None = None  # why the session is disconnected, while it is

    async def open(self, local_url: str) -> str:
        """Connect a session with the authtoken and listen on an HTTP endpoint."""
        if not self._authtoken:
            raise TunnelError(
                "--tunnel ngrok needs NGROK_AUTHTOKEN (your token from dashboard.ngrok.com)"
            )
        builder = (
            self._sdk.SessionBuilder()
            .authtoken(self._authtoken)
            .handle_disconnection(self._disconnected)
            .handle_heartbeat(self._heartbeat)
        )
        try:
            self._session = await builder.connect()
            endpoint = self._session.http_endpoint()
            if self._domain:
                endpoint = endpoint.domain(self._domain)
            self._listener = await endpoint.listen_and_forward(local_url)
            url = str(self._listener.url())
        except Exception as exc:  # the SDK raises plain ValueError/RuntimeError with a message
            raise TunnelError(f"ngrok refused the tunnel: {_one_line(exc)}") from exc
        if not url.startswith("https://"):
            raise TunnelError(f"ngrok gave an unusable URL: {url[:200]!r}")
        return url.rstrip("/")

    def _disconnected(self, addr: str, error: str) -> None:
        self._down = f"ngrok session to {addr} lost: {_one_line(error)}"

    def _heartbeat(self, latency_ms: int) -> None:
        self._down = None

    async def status(self) -> tuple[str | None, str]:
        """Up with the listener's URL, unless the session said it lost its connection."""
        if self._listener is None:
            return None, "ngrok is not connected"
        if self._down is not None:
            return None, self._down
        return str(self._listener.url()).rstrip("/"), ""

    async def close(self) -> None:
        """Close the listener and the session."""
        for part in (self._listener, self._session):
            if part is not None:
                with contextlib.suppress(Exception):  # a session already gone
                    await part.close()
        self._listener = self._session = None


def _one_line(error: object) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__
