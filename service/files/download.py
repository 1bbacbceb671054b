"""Downloading one result file: vetted URL, bounded size and time, verified before it is kept."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.files.sniff import HEAD_BYTES, Kind, integrity_problem, sniff, video_size
from service.files.store import AssetStore, StoreUnavailable
from service.upstream.httppool import WatchedClient
from service.upstream.netguard import UrlGuard, UrlRefused

MAX_REDIRECTS = 3
_FLUSH = 1 << 20


class FetchFailed(Exception):
    """A download did not produce a good file; `retryable` says whether trying again may help."""

    def __init__(self, reason: str, *, retryable: bool, store_down: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable or store_down
        self.store_down = store_down  # the file store failed, not the file: not an attempt


@dataclass(frozen=True, slots=True)
class Fetched:
    """A verified file, stored under its hash."""

    sha256: str
    size: int
    kind: Kind


class Downloader:
    """Fetches result files into an `AssetStore` through the downloads HTTP client.

    The client's read timeout ends a stalled transfer and the deadline is checked between
    chunks, so httpx's own timeouts end a download rather than a cancellation from outside.
    Every timeout of a request is capped by what is left of the deadline.
    """

    def __init__(
        self,
        http: WatchedClient,
        store: AssetStore,
        guard: UrlGuard,
        *,
        max_bytes: int,
        timeout: float,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._store = store
        self._guard = guard
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._now = now  # a monotonic clock, for the deadline

    async def fetch(self, url: str) -> Fetched:
        """Download, verify and store `url`; raise `FetchFailed` otherwise.

        A store that is down or refuses us is checked first (its answer is cached a few
        seconds), so an outage does not download every file only to drop it."""
        problem = await self._store.problem()
        if problem is not None:
            raise FetchFailed(f"file store unavailable: {problem}", retryable=True, store_down=True)
        staged = self._store.staging_file()
        deadline = self._now() + self._timeout
        # A last resort for a transport that ignores httpx's timeouts: they and the deadline
        # checks end a download first. Cancelling here is safe (the client detaches its sends).
        backstop = self._timeout + min(self._timeout, self._http.client.timeout.read or 0.0)
        try:
            async with asyncio.timeout(backstop):
                digest, size, head = await self._download(url, staged, deadline)
            kind = await asyncio.to_thread(self._verify, staged, head, size)
            await self._store.put(staged, digest)
        except StoreUnavailable as exc:
            reason = f"file store unavailable: {exc.message}"
            raise FetchFailed(reason, retryable=True, store_down=True) from exc
        except TimeoutError as exc:
            raise self._overdue() from exc
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.TimeoutException) and self._now() >= deadline:
                raise self._overdue() from exc
            raise FetchFailed(f"download failed: {exc!r}", retryable=True) from exc
        finally:
            staged.unlink(missing_ok=True)
        return Fetched(digest, size, kind)

    def _overdue(self) -> FetchFailed:
        return FetchFailed(f"download took longer than {self._timeout:g} s", retryable=True)

    def _within(self, deadline: float) -> httpx.Timeout:
        """The client's timeouts, none reaching past `deadline`."""
        left = max(deadline - self._now(), 0.001)
        default = self._http.client.timeout

        def cap(value: float | None) -> float:
            return left if value is None else min(value, left)

        return httpx.Timeout(
            connect=cap(default.connect),
            read=cap(default.read),
            write=cap(default.write),
            pool=cap(default.pool),
        )

    async def _download(self, url: str, staged: Path, deadline: float) -> tuple[str, int, bytes]:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                target = await self._guard.vet(url)
            except UrlRefused as exc:
                raise FetchFailed(f"refused URL: {exc}", retryable=False) from exc
            async with self._http.stream(
                "GET",
                target.url,
                headers={"Host": target.host_header},
                extensions={"sni_hostname": target.server_name},
                timeout=self._within(deadline),
            ) as response:
                if response.is_redirect and "location" in response.headers:
                    url = str(httpx.URL(url).join(response.headers["location"]))
                    continue
                return await self._save(response, staged, deadline)
        raise FetchFailed(f"more than {MAX_REDIRECTS} redirects", retryable=False)

    async def _save(
        self, response: httpx.Response, staged: Path, deadline: float
    ) -> tuple[str, int, bytes]:
        status = response.status_code
        if status != 200:
            retryable = status >= 500 or status in (404, 408, 425, 429)
            raise FetchFailed(f"result URL answered HTTP {status}", retryable=retryable)
        declared = response.headers.get("content-length")
        if response.headers.get("content-encoding", "identity") != "identity":
            declared = None  # the length is of the encoded body; limits apply to decoded bytes
        if declared and declared.isdigit() and int(declared) > self._max_bytes:
            raise FetchFailed(f"file is larger than {self._max_bytes} bytes", retryable=False)
        hasher, size, head, pending = hashlib.sha256(), 0, b"", bytearray()
        with staged.open("wb") as out:
            async for chunk in response.aiter_bytes():
                if self._now() > deadline:
                    raise self._overdue()
                size += len(chunk)
                if size > self._max_bytes:
                    raise FetchFailed(
                        f"file is larger than {self._max_bytes} bytes", retryable=False
                    )
                hasher.update(chunk)
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                pending += chunk
                if len(pending) >= _FLUSH:
                    await asyncio.to_thread(out.write, bytes(pending))
                    pending.clear()
            await asyncio.to_thread(out.write, bytes(pending))
        if declared and declared.isdigit() and int(declared) != size:
            raise FetchFailed(f"got {size} of {declared} bytes (truncated)", retryable=True)
        return hasher.hexdigest(), size, head

    @staticmethod
    def _verify(staged: Path, head: bytes, size: int) -> Kind:
        kind = sniff(head)
        if kind is None:
            raise FetchFailed("not a PNG, JPEG, WebP, GIF or MP4/MOV file", retryable=True)
        with staged.open("rb") as f:
            problem = integrity_problem(f, kind, size)
            if problem is not None:
                raise FetchFailed(problem, retryable=True)
            if kind.content_type.startswith("video/"):
                dims = video_size(f, size)
                if dims is not None:
                    kind = Kind(kind.content_type, kind.extension, *dims)
        return kind
