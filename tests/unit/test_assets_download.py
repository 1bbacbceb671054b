"""Downloading one result file through `httpx.MockTransport`: vetting, limits, verification.

`FileHost` (used by the other asset tests too) stands in for the servers that hold GrsAI's
result files. The downloader connects to the vetted IP and names the host in the `Host` header,
so requests are routed by that header.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from service.files.download import Downloader, FetchFailed
from service.files.sniff import Kind
from service.files.store import LocalAssetStore
from service.upstream.clients import watched_client
from service.upstream.httppool import WatchedClient
from service.upstream.netguard import UrlGuard
from tests.unit.test_assets_netguard import PUBLIC_V4, FakeDns
from tests.unit.test_assets_sniff import gif, jpeg, mp4, png, webp_vp8x

FILES = "files.example.com"
MIRROR = "mirror.example.com"
URL = f"https://{FILES}/out/a.png"
MAX_BYTES = 64 * 1024
Responder = Callable[[httpx.Request], Awaitable[httpx.Response]]


def public_dns() -> FakeDns:
    """Test names: two public file hosts, one name on a private network, one on loopback."""
    return FakeDns(
        {
            FILES: [PUBLIC_V4],
            MIRROR: ["93.184.216.35"],
            "internal.example": ["10.0.0.5"],
            "localhost.example": ["127.0.0.1"],
        }
    )


@dataclass
class FileHost:
    """Servers of result files behind `httpx.MockTransport`, keyed by Host header and path."""

    routes: dict[str, Responder] = field(default_factory=dict)
    seen: list[httpx.Request] = field(default_factory=list)

    @staticmethod
    def _key(url: str) -> str:
        parsed = httpx.URL(url)
        return parsed.netloc.decode("ascii") + parsed.path

    def route(self, url: str, responder: Responder) -> None:
        """Answer requests for `url` with `responder`."""
        self.routes[self._key(url)] = responder

    def serve(
        self, url: str, body: bytes, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        """Answer `url` with a fixed response."""

        async def answer(request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, content=body, headers=headers)

        self.route(url, answer)

    def redirect(self, url: str, location: str, status: int = 302) -> None:
        """Answer `url` with a redirect to `location`."""
        self.serve(url, b"", status, {"Location": location})

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Route one request by its Host header and path (404 when unknown)."""
        self.seen.append(request)
        responder = self.routes.get(request.headers["host"] + request.url.path)
        if responder is None:
            return httpx.Response(404, text="no such file")
        return await responder(request)

    def transport(self) -> httpx.MockTransport:
        """The transport to give the HTTP client."""
        return httpx.MockTransport(self.handle)


async def streamed(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """A body sent in chunks without a Content-Length (chunked transfer)."""
    for chunk in chunks:
        yield chunk


def staged_leftovers(store: LocalAssetStore) -> list[Path]:
    """Files left in the staging directory."""
    return list((store.root / "tmp").iterdir())


def stored_files(store: LocalAssetStore) -> list[Path]:
    """Every stored (not staged) file."""
    staging = store.root / "tmp"
    return sorted(p for p in store.root.rglob("*") if p.is_file() and p.parent != staging)


@pytest.fixture(name="files")
def _files() -> FileHost:
    return FileHost()


@pytest.fixture(name="dns")
def _dns() -> FakeDns:
    return public_dns()


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> LocalAssetStore:
    return LocalAssetStore(tmp_path / "assets")


def download_client(files: FileHost) -> WatchedClient:
    """A downloads client whose requests reach `files`."""
    return watched_client(
        "downloads", capacity=8, timeout=httpx.Timeout(5.0), transport=files.transport()
    )


@pytest.fixture(name="http")
async def _http(files: FileHost) -> AsyncIterator[WatchedClient]:
    async with contextlib.aclosing(download_client(files)) as client:
        yield client


@pytest.fixture(name="downloader")
def _downloader(http: WatchedClient, store: LocalAssetStore, dns: FakeDns) -> Downloader:
    return Downloader(http, store, UrlGuard(resolver=dns), max_bytes=MAX_BYTES, timeout=5.0)


async def failure(downloader: Downloader, url: str = URL) -> FetchFailed:
    """The `FetchFailed` that fetching `url` raises (it must fail)."""
    with pytest.raises(FetchFailed) as caught:
        await downloader.fetch(url)
    return caught.value


async def test_good_png_is_stored_under_its_sha256(
    downloader: Downloader, files: FileHost, store: LocalAssetStore
) -> None:
    """A real PNG is verified and stored by its hash, with kind and size."""
    body = png(7, 5)
    files.serve(URL, body, headers={"Content-Type": "application/octet-stream"})
    fetched = await downloader.fetch(URL)
    sha = hashlib.sha256(body).hexdigest()
    assert (fetched.sha256, fetched.size) == (sha, len(body))
    assert fetched.kind == Kind("image/png", "png", 7, 5)  # from the bytes, not the header
    assert store.path(sha).read_bytes() == body
    assert staged_leftovers(store) == []


async def test_request_goes_to_the_vetted_ip_with_host_and_sni(
    downloader: Downloader, files: FileHost, dns: FakeDns
) -> None:
    """The request is pinned to the resolved IP and names the original host for HTTP and TLS."""
    files.serve(URL, png())
    await downloader.fetch(URL + "?sig=abc")
    (request,) = files.seen
    assert str(request.url) == f"https://{PUBLIC_V4}/out/a.png?sig=abc"
    assert request.headers["host"] == FILES
    assert request.extensions["sni_hostname"] == FILES
    assert dns.calls == [(FILES, 443)]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (jpeg(40, 30), Kind("image/jpeg", "jpg", 40, 30)),
        (webp_vp8x(64, 48), Kind("image/webp", "webp", 64, 48)),
        (gif(5, 4), Kind("image/gif", "gif", 5, 4)),
        (mp4(1280, 720), Kind("video/mp4", "mp4", 1280, 720)),
        (mp4(640, 480, b"qt  "), Kind("video/quicktime", "mov", 640, 480)),
    ],
    ids=["jpeg", "webp", "gif", "mp4", "mov"],
)
async def test_other_kinds_are_stored_with_their_size(
    downloader: Downloader, files: FileHost, body: bytes, kind: Kind
) -> None:
    """JPEG, WebP, GIF and videos (size from tkhd) are stored too."""
    files.serve(URL, body)
    assert (await downloader.fetch(URL)).kind == kind


async def test_redirects_are_followed_and_each_hop_vetted(
    downloader: Downloader, files: FileHost, dns: FakeDns, store: LocalAssetStore
) -> None:
    """A relative and a cross-host redirect are followed, resolving each new host."""
    body = png()
    files.redirect(URL, "/moved/a.png", 301)
    files.redirect(f"https://{FILES}/moved/a.png", f"https://{MIRROR}/final.png", 307)
    files.serve(f"https://{MIRROR}/final.png", body)
    fetched = await downloader.fetch(URL)
    assert fetched.sha256 == hashlib.sha256(body).hexdigest()
    assert [r.headers["host"] for r in files.seen] == [FILES, FILES, MIRROR]
    assert str(files.seen[-1].url) == "https://93.184.216.35/final.png"
    assert dns.calls == [(FILES, 443), (FILES, 443), (MIRROR, 443)]
    assert stored_files(store) == [store.path(fetched.sha256)]


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://internal.example/a.png",
        "http://[::ffff:10.0.0.1]/a.png",
        "file:///etc/passwd",
        "http://user:pw@mirror.example.com/a.png",
    ],
)
async def test_redirect_to_a_refused_url_fails_for_good(
    downloader: Downloader, files: FileHost, store: LocalAssetStore, location: str
) -> None:
    """A redirect to a private address or unsafe URL is refused, not retried, never requested."""
    files.redirect(URL, location)
    failed = await failure(downloader)
    assert failed.retryable is False
    assert failed.reason.startswith("refused URL: ")
    assert len(files.seen) == 1
    assert staged_leftovers(store) == []


async def test_refused_first_url_fails_for_good(downloader: Downloader, files: FileHost) -> None:
    """A result URL whose host resolves to loopback is never requested."""
    failed = await failure(downloader, "https://localhost.example/a.png")
    assert (failed.retryable, files.seen) == (False, [])


@pytest.mark.parametrize(("hops", "ok"), [(3, True), (4, False)])
async def test_at_most_three_redirects(
    downloader: Downloader, files: FileHost, store: LocalAssetStore, hops: int, ok: bool
) -> None:
    """Three redirects are followed; a fourth fails for good."""
    for hop in range(hops):
        files.redirect(f"https://{FILES}/r{hop}", f"/r{hop + 1}")
    files.serve(f"https://{FILES}/r{hops}", png())
    if ok:
        await downloader.fetch(f"https://{FILES}/r0")
        return
    failed = await failure(downloader, f"https://{FILES}/r0")
    assert (failed.reason, failed.retryable) == ("more than 3 redirects", False)
    assert len(files.seen) == 4
    assert staged_leftovers(store) == []


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        *[(status, True) for status in (404, 408, 429, 500, 502, 503)],
        *[(status, False) for status in (400, 401, 403, 410, 204, 304)],
    ],
)
async def test_http_errors_are_retryable_or_not(
    downloader: Downloader, files: FileHost, store: LocalAssetStore, status: int, retryable: bool
) -> None:
    """404/408/429/5xx may heal (retry); 403 and other answers will not."""
    files.serve(URL, b"nope", status)
    failed = await failure(downloader)
    assert (failed.reason, failed.retryable) == (f"result URL answered HTTP {status}", retryable)
    assert staged_leftovers(store) == []
    assert stored_files(store) == []


async def test_redirect_without_location_is_an_answer(
    downloader: Downloader, files: FileHost
) -> None:
    """A 302 without Location is not followed; it fails for good."""
    files.serve(URL, b"", 302)
    failed = await failure(downloader)
    assert (failed.reason, failed.retryable) == ("result URL answered HTTP 302", False)


async def test_declared_length_over_the_limit_fails_before_reading(
    downloader: Downloader, files: FileHost, store: LocalAssetStore
) -> None:
    """A Content-Length above max_bytes fails for good without downloading the body."""
    read: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        read.append(b"started")
        yield b"\x00" * 16

    async def answer(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Length": str(MAX_BYTES + 1)}
        return httpx.Response(200, content=body(), headers=headers)

    files.route(URL, answer)
    failed = await failure(downloader)
    assert (failed.reason, failed.retryable) == (f"file is larger than {MAX_BYTES} bytes", False)
    assert read == []
    assert staged_leftovers(store) == []


async def test_body_over_the_limit_without_length_fails(
    downloader: Downloader, files: FileHost, store: LocalAssetStore
) -> None:
    """A chunked body growing past max_bytes is cut off and fails for good."""
    chunks = [b"\x00" * 16 * 1024] * 5  # 80 KiB > 64 KiB

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=streamed(chunks))

    files.route(URL, answer)
    failed = await failure(downloader)
    assert (failed.reason, failed.retryable) == (f"file is larger than {MAX_BYTES} bytes", False)
    assert staged_leftovers(store) == []
    assert stored_files(store) == []


async def test_body_exactly_at_the_limit_is_accepted(
    http: WatchedClient, files: FileHost, store: LocalAssetStore, dns: FakeDns
) -> None:
    """max_bytes is inclusive."""
    body = png(3, 3)
    files.serve(URL, body)
    downloader = Downloader(http, store, UrlGuard(resolver=dns), max_bytes=len(body), timeout=5.0)
    assert (await downloader.fetch(URL)).size == len(body)


@pytest.mark.parametrize("declared", ["shorter", "longer"])
async def test_content_length_mismatch_is_retryable(
    downloader: Downloader, files: FileHost, store: LocalAssetStore, declared: str
) -> None:
    """A body whose size differs from its Content-Length is a truncated download (retry)."""
    body = png()
    length = len(body) + 100 if declared == "longer" else len(body) - 1
    files.serve(URL, body, headers={"Content-Length": str(length)})
    failed = await failure(downloader)
    assert failed.reason == f"got {len(body)} of {length} bytes (truncated)"
    assert failed.retryable is True
    assert staged_leftovers(store) == []
    assert stored_files(store) == []


async def test_corrupted_png_is_retryable_and_not_stored(
    downloader: Downloader, files: FileHost, store: LocalAssetStore
) -> None:
    """A PNG failing its CRC is not kept; trying again may fetch a good copy."""
    body = bytearray(png(8, 8))
    body[45] ^= 0xFF
    files.serve(URL, bytes(body))
    failed = await failure(downloader)
    assert failed.retryable is True
    assert "CRC" in failed.reason
    assert staged_leftovers(store) == []
    assert stored_files(store) == []


async def test_truncated_png_without_length_is_retryable(
    downloader: Downloader, files: FileHost, store: LocalAssetStore
) -> None:
    """A chunked PNG that stops early is caught by the integrity check."""
    body = png(8, 8)

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=streamed([body[:40], body[40:-6]]))

    files.route(URL, answer)
    failed = await failure(downloader)
    assert failed.retryable is True
    assert "truncated" in failed.reason
    assert stored_files(store) == []


async def test_html_body_is_not_a_result_file(
    downloader: Downloader, files: FileHost, store: LocalAssetStore
) -> None:
    """An HTML page (an expired-link notice, say) answered with 200 is refused and retried."""
    files.serve(
        URL, b"<html><body>link expired</body></html>", headers={"Content-Type": "image/png"}
    )
    failed = await failure(downloader)
    assert failed.reason == "not a PNG, JPEG, WebP, GIF or MP4/MOV file"
    assert failed.retryable is True
    assert staged_leftovers(store) == []
    assert stored_files(store) == []


async def test_connection_error_is_retryable(
    downloader: Downloader, files: FileHost, store: LocalAssetStore
) -> None:
    """A transport error becomes a retryable failure naming it."""

    async def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    files.route(URL, reset)
    failed = await failure(downloader)
    assert failed.retryable is True
    assert failed.reason.startswith("download failed: ConnectError")
    assert staged_leftovers(store) == []


async def test_read_error_mid_body_is_retryable(
    downloader: Downloader, files: FileHost, store: LocalAssetStore
) -> None:
    """A connection lost mid-body leaves nothing behind and may be retried."""

    async def broken() -> AsyncIterator[bytes]:
        yield png()[:20]
        raise httpx.ReadError("connection reset")

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=broken())

    files.route(URL, answer)
    failed = await failure(downloader)
    assert failed.retryable is True
    assert staged_leftovers(store) == []
    assert stored_files(store) == []


async def test_slow_download_times_out(
    http: WatchedClient, files: FileHost, store: LocalAssetStore, dns: FakeDns
) -> None:
    """A download exceeding the timeout fails (retryable) and leaves no staged file."""
    never = asyncio.Event()

    async def stall(request: httpx.Request) -> httpx.Response:
        await never.wait()
        raise AssertionError("unreachable")

    files.route(URL, stall)
    downloader = Downloader(http, store, UrlGuard(resolver=dns), max_bytes=MAX_BYTES, timeout=0.05)
    failed = await failure(downloader)
    assert (failed.reason, failed.retryable) == ("download took longer than 0.05 s", True)
    assert staged_leftovers(store) == []


async def test_same_file_twice_is_stored_once(
    downloader: Downloader, files: FileHost, store: LocalAssetStore
) -> None:
    """Two URLs with identical bytes share one stored file."""
    body = png(4, 4)
    files.serve(URL, body)
    files.serve(f"https://{MIRROR}/copy.png", body)
    first = await downloader.fetch(URL)
    second = await downloader.fetch(f"https://{MIRROR}/copy.png")
    assert first == second
    assert stored_files(store) == [store.path(first.sha256)]
    assert staged_leftovers(store) == []
