"""`serve --tunnel`: open the tunnel before the app is built, and say `ready <url>` once it serves.

Lines on standard output a program can wait for:
    ready <public url>        the relay serves (through the tunnel, when there is one)
    tunnel down: <reason>     the tunnel dropped; open callback-mode tasks switch to polling
    tunnel up <url>           it came back (possibly at a new URL)
    tunnel moved <url>        it is up at a new URL
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from service.settings import Settings
from service.tunnel.cloudflared import CloudflaredTunnel
from service.tunnel.drivers import Tunnel, TunnelError
from service.tunnel.ngrok import NgrokTunnel, load_sdk
from service.tunnel.public import PublicAddress
from service.tunnel.runner import TunnelThread

log = logging.getLogger("grsai_relay")

TunnelFactory = Callable[[str, Settings], Tunnel]


def say(line: str) -> None:
    """One line on standard output, at once and in one write (a program may be reading it line
    by line, and print() writes the line and its newline apart when stdout is unbuffered, so a
    log line on stderr into the same file could land between them)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # replaced by an object without a descriptor
        print(line, flush=True)
        return
    sys.stdout.flush()
    os.write(fd, f"{line}\n".encode())


def make_tunnel(kind: str, settings: Settings) -> Tunnel:
    """The tunnel tool `kind` names, configured from settings (TunnelError if unusable)."""
    if kind == "ngrok":
        return NgrokTunnel(load_sdk(), settings.ngrok_authtoken, settings.ngrok_domain)
    return CloudflaredTunnel(start_timeout=settings.tunnel_start_timeout)


class Tunnelled:
    """The public address of one `serve`, and the tunnel behind it if any."""

    def __init__(self, public: PublicAddress, runner: TunnelThread | None = None) -> None:
        self.public = public
        self.runner = runner

    def stop(self) -> None:
        """Take the tunnel down (after the server stopped)."""
        if self.runner is not None:
            self.runner.stop()


def open_public_address(
    settings: Settings, kind: str, local_url: str, factory: TunnelFactory = make_tunnel
) -> Tunnelled | None:
    """PUBLIC_BASE_URL as it is, or a tunnel to `local_url` that is up. None when the tunnel
    cannot come up and TUNNEL_FALLBACK=exit (the reason is printed, one line)."""
    if kind == "none":
        return Tunnelled(PublicAddress(settings.public_base_url))
    if settings.public_base_url:
        log.warning(
            "PUBLIC_BASE_URL=%s is replaced by the %s tunnel's URL", settings.public_base_url, kind
        )
    public = PublicAddress(None, tunnel=kind)
    try:
        runner = TunnelThread(
            factory(kind, settings),
            public,
            local_url,
            start_timeout=settings.tunnel_start_timeout,
            say=say,
        )
        runner.start()
    except TunnelError as exc:
        print(f"grsai-relay: {exc}", file=sys.stderr, flush=True)
        if settings.tunnel_fallback == "exit":
            return None
        print("grsai-relay: serving in poll mode without a public URL (TUNNEL_FALLBACK=poll)",
              file=sys.stderr, flush=True)  # fmt: skip
        return Tunnelled(PublicAddress(None, tunnel=kind))
    return Tunnelled(public, runner)


def ready_line(public: PublicAddress, local_url: str) -> str:
    """`ready <url>`: the public URL, or the local one when there is none."""
    return f"ready {public.url or local_url}"
