"""What `serve` settles before it starts anything: the port, the database, clashing settings.

The listening socket is bound first, so a port already in use fails in one line before a demo
key, a banner or a simulator exists; uvicorn is then handed the bound socket.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from urllib.parse import urlsplit

from service.settings import Settings
from service.upstream.netguard import is_public, parse_networks


class CannotListen(Exception):
    """The address cannot be bound; the message says which and why."""


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0 picks a free one), ready to be handed to uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # as uvicorn does: a restart may bind while old connections sit in TIME_WAIT; a port
        # another process listens on is still refused
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += " (another process listens there: stop it, or pick another --port)"
        raise CannotListen(f"cannot listen on {host}:{port}: {reason}") from exc
    sock.set_inheritable(True)
    return sock


def workers_problem(settings: Settings, workers: int, asked_by: str) -> str | None:
    """Why `workers` processes cannot serve this database (`asked_by` names the setting), or
    None. Only PostgreSQL takes writes from several processes; SQLite is written by one."""
    if workers == 1 or settings.database_url.split(":", 1)[0].lower() != "sqlite":
        return None
    return (
        f"{asked_by} asks for {workers} processes, but SQLite is written by one process:"
        " run one, or use PostgreSQL (DATABASE_URL=postgresql://...) for more"
    )


def loopback_fetch_warning(settings: Settings) -> str | None:
    """A warning when GRSAI_BASE_URL is not public and FETCH_ALLOW_NETWORKS does not admit it.

    A local simulator's result files come from its own address: the copier refuses them as
    non-public unless the allow-list admits that address, so every copy would fail.
    """
    host = (urlsplit(settings.grsai_base_url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: resolved only when used, not at start
    if is_public(address):
        return None
    if any(address in network for network in parse_networks(settings.fetch_allow_networks)):
        return None
    return (
        f"GRSAI_BASE_URL {settings.grsai_base_url} is not a public address, and"
        f" FETCH_ALLOW_NETWORKS does not admit {address}: copies of its result files will fail;"
        f" set FETCH_ALLOW_NETWORKS={address}/{address.max_prefixlen}"
    )
