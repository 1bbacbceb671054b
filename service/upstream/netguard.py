"""Outbound URL guard against server-side request forgery (SSRF).

A URL we are asked to fetch or call (a GrsAI result URL, a client's callback URL) must be
http(s) without credentials, and its host must resolve only to public addresses: private,
loopback, link-local (169.254.169.254), CGNAT, multicast, reserved, unspecified, and IPv6 forms
embedding such an IPv4 address (IPv4-mapped, 6to4, NAT64, Teredo) are refused unless an allowed
network admits them. The host is resolved once; the caller then connects to the vetted address
(`Target.url`, with the original `Host` header and TLS server name), leaving no DNS-rebinding
window between the check and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlRefused(Exception):
    """The URL may not be fetched; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """A vetted URL: connect to `url` (an IP literal), send `host_header`, verify `server_name`."""

    url: str
    host_header: str
    server_name: str
    address: str


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the operating system's resolver (getaddrinfo), off the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return sorted({str(info[4][0]) for info in infos})


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden in an IPv4-mapped, 6to4, NAT64 or Teredo IPv6 address."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """True for globally routable unicast addresses (and IPv6 forms embedding only such)."""
    inner = embedded_ipv4(address)
    if inner is not None and not is_public(inner):
        return False
    return address.is_global and not address.is_multicast


def host_of(url: str) -> str:
    """A URL's host, lower-cased (what per-host limits count against)."""
    return (urlsplit(url).hostname or "").lower()


def parse_networks(spec: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse a comma-separated list (or iterable) of CIDR networks."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())


class UrlGuard:
    """Vets URLs against the rules above, with an allow-list of networks."""

    def __init__(
        self, allowed: Iterable[IPNetwork] = (), resolver: Resolver = system_resolver
    ) -> None:
        self._allowed = tuple(allowed)
        self._resolver = resolver

    def permitted(self, address: IPAddress) -> bool:
        """True when `address` is public or inside an allowed network."""
        return is_public(address) or any(address in net for net in self._allowed)

    async def vet(self, url: str) -> Target:
        """Check `url` and resolve its host once; raise `UrlRefused` with the reason."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise UrlRefused(f"scheme {parts.scheme or '(none)'!r} is not http or https")
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("URLs with credentials are refused")
        host = parts.hostname
        if not host:
            raise UrlRefused("URL has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise UrlRefused("URL has an invalid port") from exc
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                resolved = await self._resolver(host, port)
            except (OSError, UnicodeError, ValueError) as exc:  # IDNA errors are UnicodeErrors
                raise UrlRefused(f"host {host[:80]!r} does not resolve") from exc
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
        if not addresses:
            raise UrlRefused(f"host {host!r} does not resolve")
        refused = [str(a) for a in addresses if not self.permitted(a)]
        if refused:
            raise UrlRefused(f"host {host!r} resolves to a non-public address ({refused[0]})")
        chosen = addresses[0]
        ip_host = f"[{chosen}]" if chosen.version == 6 else str(chosen)
        netloc = f"{ip_host}:{port}"
        host_header = parts.netloc.rsplit("@", 1)[-1]
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        return Target(pinned, host_header, host, str(chosen))
