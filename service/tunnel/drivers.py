"""What a tunnel is to the relay: open it (to a public URL), ask how it is, close it."""

from __future__ import annotations

from typing import Protocol


class TunnelError(Exception):
    """A tunnel that cannot come up, said in one line a person can act on."""


class Tunnel(Protocol):
    """One tunnel tool (ngrok, cloudflared) forwarding a public URL to the relay's port."""

    name: str

    async def open(self, local_url: str) -> str:
        """Bring the tunnel up to `local_url`; return its public base URL (https://...)."""
        ...

    async def status(self) -> tuple[str | None, str]:
        """The public URL now (None while down) and, when down, why. May restart the tool."""
        ...

    async def close(self) -> None:
        """Take the tunnel down and release what it holds (processes, sessions)."""
        ...
