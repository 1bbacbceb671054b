"""The outbound URL guard: what it refuses, what it admits, and the pinned target it returns."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from service.upstream.netguard import Target, UrlGuard, UrlRefused, embedded_ipv4, parse_networks

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:4700:4700::1111"


class FakeDns:
    """A resolver answering from a table; unknown names fail like getaddrinfo does."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        """Resolve `host` from the table, recording the call."""
        self.calls.append((host, port))
        try:
            return list(self.table[host])
        except KeyError as exc:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from exc


async def refused(guard: UrlGuard, url: str) -> str:
    """The reason `guard` refuses `url` (it must refuse)."""
    with pytest.raises(UrlRefused) as caught:
        await guard.vet(url)
    return str(caught.value)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://files.example.com/a.png", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("//files.example.com/a.png", "scheme"),
        ("gopher://127.0.0.1:70/", "scheme"),
        ("http://user:secret@files.example.com/a.png", "credentials"),
        ("http://user@files.example.com/a.png", "credentials"),
        ("https://:secret@files.example.com/", "credentials"),
        ("http:///a.png", "no host"),
        ("http://:8080/a.png", "no host"),
        ("http://files.example.com:99999/a.png", "port"),
        ("http://files.example.com:http/a.png", "port"),
    ],
)
async def test_malformed_or_unsafe_urls_are_refused(url: str, why: str) -> None:
    """Non-http(s) schemes, userinfo, missing hosts and bad ports are refused with a reason."""
    dns = FakeDns({"files.example.com": [PUBLIC_V4]})
    assert why in await refused(UrlGuard(resolver=dns), url)
    assert dns.calls == []


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.8.9.10",
        "[::1]",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104  # a refused address under test, not a bind
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "[::]",
        "[::ffff:127.0.0.1]",
        "[::ffff:10.0.0.1]",
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "[2002:c0a8:101::]",  # 6to4 of 192.168.1.1
        "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
        "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo, client 127.0.0.1
        "[fe80::1]",
        "[fe80::1%25eth0]",
        "[fc00::1]",
        "[fd12:3456::1]",
        "[ff02::1]",
        "[2001:db8::1]",
    ],
)
async def test_non_public_ip_literals_are_refused(host: str) -> None:
    """Private, loopback, link-local, CGNAT, multicast, reserved and embedding forms are refused."""
    dns = FakeDns({})
    reason = await refused(UrlGuard(resolver=dns), f"http://{host}/a.png")
    assert "non-public address" in reason
    assert dns.calls == []  # a literal is never resolved


@pytest.mark.parametrize(
    ("url", "address"),
    [
        (f"http://{PUBLIC_V4}/a.png", PUBLIC_V4),
        ("https://8.8.8.8/a.png", "8.8.8.8"),
        (f"http://[{PUBLIC_V6}]/a.png", PUBLIC_V6),
        ("https://[2001:4860:4860::8888]:8443/a.png", "2001:4860:4860::8888"),
    ],
)
async def test_public_ip_literals_are_admitted(url: str, address: str) -> None:
    """Public IPv4 and IPv6 literals pass, pinned to themselves."""
    target = await UrlGuard(resolver=FakeDns({})).vet(url)
    assert target.address == address


def test_embedded_ipv4_forms() -> None:
    """IPv4-mapped, 6to4, NAT64 and Teredo addresses yield the IPv4 address they carry."""
    cases = {
        "::ffff:10.1.2.3": "10.1.2.3",
        "2002:7f00:1::": "127.0.0.1",
        "64:ff9b::a00:1": "10.0.0.1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe": "127.0.0.1",
    }
    for v6, v4 in cases.items():
        assert embedded_ipv4(ipaddress.ip_address(v6)) == ipaddress.ip_address(v4)
    assert embedded_ipv4(ipaddress.ip_address(PUBLIC_V6)) is None
    assert embedded_ipv4(ipaddress.ip_address(PUBLIC_V4)) is None


async def test_hostname_resolving_to_loopback_is_refused() -> None:
    """A name that resolves to 127.0.0.1 is refused (the check is on addresses, not names)."""
    dns = FakeDns({"sneaky.example": ["127.0.0.1"]})
    reason = await refused(UrlGuard(resolver=dns), "http://sneaky.example/a.png")
    assert "127.0.0.1" in reason
    assert dns.calls == [("sneaky.example", 80)]


async def test_allowed_network_admits_a_private_address() -> None:
    """`allowed=parse_networks("127.0.0.0/8")` admits the loopback name, and nothing else."""
    dns = FakeDns({"sim.local": ["127.0.0.1"], "lan.local": ["10.0.0.7"], "v6.local": ["::1"]})
    guard = UrlGuard(allowed=parse_networks("127.0.0.0/8"), resolver=dns)
    target = await guard.vet("http://sim.local:8001/files/a.png")
    assert target == Target(
        "http://127.0.0.1:8001/files/a.png", "sim.local:8001", "sim.local", "127.0.0.1"
    )
    assert "10.0.0.7" in await refused(guard, "http://lan.local/a.png")
    assert "::1" in await refused(guard, "http://v6.local/a.png")


def test_parse_networks_reads_a_comma_separated_list() -> None:
    """Blank items are skipped; host bits are tolerated."""
    assert parse_networks(" 10.0.0.0/8, ,192.168.1.5/16,fc00::/7 ") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("fc00::/7"),
    )
    assert parse_networks("") == ()
    assert parse_networks(["127.0.0.1/32"]) == (ipaddress.ip_network("127.0.0.1/32"),)


async def test_one_private_address_among_public_ones_is_refused() -> None:
    """Every resolved address must be public: one public and one private is refused."""
    dns = FakeDns({"mixed.example": [PUBLIC_V4, "10.0.0.5"]})
    assert "10.0.0.5" in await refused(UrlGuard(resolver=dns), "https://mixed.example/a.png")


async def test_target_pins_the_vetted_address() -> None:
    """The target URL carries the resolved IP; Host header and TLS name stay the original host."""
    dns = FakeDns({"files.example.com": [PUBLIC_V4, "93.184.216.35"]})
    target = await UrlGuard(resolver=dns).vet("https://Files.Example.com/out/a.png?sig=x#frag")
    assert target == Target(
        url=f"https://{PUBLIC_V4}:443/out/a.png?sig=x",
        host_header="Files.Example.com",
        server_name="files.example.com",
        address=PUBLIC_V4,
    )
    assert dns.calls == [("files.example.com", 443)]  # resolved exactly once


async def test_target_keeps_an_explicit_port_and_brackets_ipv6() -> None:
    """A non-default port stays in URL and Host header; an IPv6 address is bracketed."""
    dns = FakeDns({"v6.example": [PUBLIC_V6]})
    target = await UrlGuard(resolver=dns).vet("http://v6.example:8080")
    assert target == Target(
        f"http://[{PUBLIC_V6}]:8080/", "v6.example:8080", "v6.example", PUBLIC_V6
    )
    assert dns.calls == [("v6.example", 8080)]


async def test_scoped_resolver_answers_are_checked_without_scope() -> None:
    """A resolver answer with a zone id (fe80::1%eth0) is judged by its address."""
    dns = FakeDns({"scoped.example": ["fe80::1%eth0"]})
    assert "fe80::1" in await refused(UrlGuard(resolver=dns), "http://scoped.example/")


@pytest.mark.parametrize("answer", ["error", "empty"])
async def test_unresolvable_host_is_refused(answer: str) -> None:
    """A resolver error, or an empty answer, refuses the URL."""
    dns = FakeDns({"empty.example": []})
    host = "missing.example" if answer == "error" else "empty.example"
    reason = await refused(UrlGuard(resolver=dns), f"http://{host}/a.png")
    assert reason == f"host {host!r} does not resolve"


async def test_unencodable_hostname_is_refused() -> None:
    """A host with a 64-character label is refused, not a crash (it fails before any DNS query)."""
    guard = UrlGuard()  # the system resolver: IDNA encoding fails locally, no network is used
    await refused(guard, "http://" + "a" * 64 + ".example/a.png")
