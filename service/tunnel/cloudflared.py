"""`serve --tunnel cloudflared`: a Cloudflare quick tunnel run by the `cloudflared` binary.

The public hostname is read from cloudflared's own metrics server (`GET /quicktunnel` gives
`{"hostname": ...}`), never scraped from its log: its log also names `api.trycloudflare.com`,
the service that hands out quick tunnels, in error lines. `GET /ready` answers 200 while at
least one connection to Cloudflare is up and 503 otherwise, which is how a drop (and the way
back) is seen. If the process dies it is started again, which gives a new hostname.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import socket
import time

import httpx

from service.tunnel.drivers import TunnelError

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
_HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.:")  # a port is allowed


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CloudflaredTunnel:
    """One `cloudflared tunnel --url ...` child process and its metrics server."""

    name = "cloudflared"

    def __init__(self, binary: str | None = None, *, start_timeout: float = 30.0) -> None:
        self._binary = binary
        self._start_timeout = start_timeout
        self._local_url = ""
        self._process: asyncio.subprocess.Process | None = None
        self._metrics = ""
        self._output: collections.deque[str] = collections.deque(maxlen=20)
        self._reader: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(timeout=2.0, trust_env=False)
        self._url: str | None = None
        self._restarts = 0
        self._next_restart = 0.0

    async def open(self, local_url: str) -> str:
        """Start cloudflared and wait (up to the start timeout) for a ready, named tunnel."""
        binary = self._binary or shutil.which("cloudflared")
        if binary is None:
            raise TunnelError(
                "--tunnel cloudflared needs the cloudflared binary on PATH (see"
                " developers.cloudflare.com/cloudflare-one/connections/connect-networks/downloads)"
            )
        self._binary, self._local_url = binary, local_url
        await self._start()
        deadline = time.monotonic() + self._start_timeout
        while True:
            url, why = await self._probe_metrics()
            if url is not None:
                self._url = url
                return url
            if self._process is not None and self._process.returncode is not None:
                raise TunnelError(f"cloudflared exited with code {self._process.returncode}"
                                  f"{self._last_output()}")  # fmt: skip
            if time.monotonic() >= deadline:
                await self._stop()
                raise TunnelError(
                    f"cloudflared did not bring a tunnel up within {self._start_timeout:g} s"
                    f" ({why}){self._last_output()}"
                )
            await asyncio.sleep(0.2)

    async def _start(self) -> None:
        assert self._binary is not None
        self._metrics = f"127.0.0.1:{_free_loopback_port()}"
        args = ["tunnel", "--no-autoupdate", "--metrics", self._metrics, "--url", self._local_url]
        try:
            self._process = await asyncio.create_subprocess_exec(
                self._binary,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise TunnelError(f"cloudflared could not be started: {exc}") from exc
        self._reader = asyncio.create_task(self._read_output(self._process))

    async def _read_output(self, process: asyncio.subprocess.Process) -> None:
        """Keep cloudflared's last lines (for error messages) and never let its pipe fill."""
        assert process.stdout is not None
        while line := await process.stdout.readline():
            self._output.append(line.decode("utf-8", "replace").rstrip()[:300])

    def _last_output(self) -> str:
        lines = [line for line in self._output if line.strip()][-3:]
        return "; its last output: " + " | ".join(lines) if lines else ""

    async def _probe_metrics(self) -> tuple[str | None, str]:
        """The public URL once cloudflared is ready and names its quick tunnel."""
        base = f"http://{self._metrics}"
        try:
            ready = await self._http.get(f"{base}/ready")
            if ready.status_code != 200:
                return None, "no connection to Cloudflare"
            named = await self._http.get(f"{base}/quicktunnel")
            hostname = named.json().get("hostname") if named.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return None, f"its metrics server does not answer ({type(exc).__name__})"
        if not isinstance(hostname, str) or not hostname:
            return None, "no quick-tunnel hostname yet"
        if not set(hostname) <= _HOSTNAME_CHARS or len(hostname) > 253:
            return None, f"unusable hostname {hostname[:80]!r}"
        return f"https://{hostname}", ""

    async def status(self) -> tuple[str | None, str]:
        """Ready (its URL), or down and why; a dead cloudflared is started again, with backoff."""
        process = self._process
        if process is not None and process.returncode is None:
            url, why = await self._probe_metrics()
            if url is not None:
                self._restarts = 0
            return url, why
        code = process.returncode if process is not None else None
        if time.monotonic() >= self._next_restart:
            delay = RESTART_DELAYS[min(self._restarts, len(RESTART_DELAYS) - 1)]
            self._restarts += 1
            self._next_restart = time.monotonic() + delay
            with contextlib.suppress(TunnelError):
                await self._start()
        return None, f"cloudflared exited with code {code}{self._last_output()}; restarting it"

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def close(self) -> None:
        """Stop cloudflared (SIGTERM, then SIGKILL after 5 s) and the metrics client."""
        await self._stop()
        await self._http.aclose()
