"""Where result files live: a small contract, the local-filesystem backend, and the factory that
picks a backend from `ASSET_STORE` (an S3 bucket's driver is imported only when chosen).

Files are content-addressed: named by their SHA-256, so identical files are stored once and a
name never changes meaning. A file becomes visible only by an atomic rename of a complete,
verified temporary file, so a half-written file is never served.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

CHUNK = 256 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StoreUnavailable(Exception):
    """The store cannot be reached or refuses us; `message` names the setting to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AssetStore(Protocol):
    """The operations the service needs from file storage (local folder or S3 bucket)."""

    def staging_file(self) -> Path:
        """A new, empty local temporary file to download into."""
        ...

    async def put(self, staged: Path, sha256: str) -> None:
        """Move a complete staged file into place under its hash (idempotent)."""
        ...

    async def size(self, sha256: str) -> int | None:
        """The stored file's size in bytes, or None when it is not stored."""
        ...

    def read(self, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Stream bytes [start, end] (inclusive) of a stored file, chunk by chunk."""
        ...

    async def delete(self, sha256: str, unused_since: float) -> bool:
        """Remove a stored file (and its thumbnail) unless it was (re)used after
        `unused_since`; True if removed."""
        ...

    async def put_thumbnail(self, sha256: str, data: bytes) -> None:
        """Store `data`, the small picture made once from stored file `sha256`, beside it."""
        ...

    async def thumbnail(self, sha256: str) -> bytes | None:
        """The thumbnail stored beside file `sha256`, or None when none was made yet."""
        ...

    async def last_used(self, sha256: str) -> float | None:
        """When the file was stored or last reused (what `delete` compares), None if absent."""
        ...

    def iter_hashes(self) -> AsyncIterator[str]:
        """Every stored file's hash (a full sweep, for pruning)."""
        ...

    async def presign(self, sha256: str, seconds: int, content_type: str) -> str | None:
        """A URL serving the file directly for `seconds`, or None if the store has none."""
        ...

    async def problem(self) -> str | None:
        """Why the store cannot be used now (cached a few seconds), or None when it can."""
        ...

    def clear_staging(self, older_than: float = 0.0, now: float | None = None) -> int:
        """Remove staged downloads left by a crash; return how many."""
        ...

    async def open(self) -> None:
        """Make the client (no request is sent: a store that is down does not stop a start)."""
        ...

    async def close(self) -> None:
        """Release the client."""
        ...


def open_asset_store(
    url: str, asset_dir: str | Path, *, env: dict[str, str] | None = None
) -> AssetStore:
    """The store `ASSET_STORE` names: empty = the folder `ASSET_DIR`, `s3://bucket/prefix` = an
    S3-compatible bucket (downloads still stage in `ASSET_DIR/tmp`). Not opened yet: an S3
    store needs `await store.open()` (and `close()`)."""
    url = url.strip()
    if not url:
        return LocalAssetStore(asset_dir)
    if url.startswith("s3://"):
        from service.files.s3 import S3AssetStore  # the driver loads only when chosen

        return S3AssetStore(url, asset_dir, env=env)
    raise ValueError(f"ASSET_STORE={url!r}: use s3://bucket/prefix, or leave it empty")


class LocalAssetStore:
    """Files under `root/ab/cd/<sha256>`, staged in `root/tmp/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """The final location of a file (the hash is checked, so no path escapes the root)."""
        if not _SHA256.fullmatch(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def thumbnail_path(self, sha256: str) -> Path:
        """Where the thumbnail of a file lives: `root/thumbs/ab/cd/<sha256>` (outside the
        `ab/cd/<sha256>` names that `hashes` sweeps)."""
        return self.root / "thumbs" / self.path(sha256).relative_to(self.root)

    async def put_thumbnail(self, sha256: str, data: bytes) -> None:
        """Write the thumbnail to a staged file, then rename it into place (never half seen)."""
        await asyncio.to_thread(self._put_thumbnail, self.thumbnail_path(sha256), data)

    def _put_thumbnail(self, final: Path, data: bytes) -> None:
        staged = self.staging_file()
        staged.write_bytes(data)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)

    async def thumbnail(self, sha256: str) -> bytes | None:
        """The thumbnail's bytes (a few kilobytes), or None."""
        try:
            return await asyncio.to_thread(self.thumbnail_path(sha256).read_bytes)
        except (FileNotFoundError, ValueError):
            return None

    def staging_file(self) -> Path:
        """A fresh temporary file in the same filesystem as the store (so rename is atomic)."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="dl-")
        os.close(fd)
        return Path(name)

    async def put(self, staged: Path, sha256: str) -> None:
        """fsync the staged file, then rename it into place."""
        await asyncio.to_thread(self._put, staged, self.path(sha256))

    @staticmethod
    def _put(staged: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        with staged.open("rb") as f:
            os.fsync(f.fileno())
        if final.exists():  # same content already stored once; touching it shields it from prune
            staged.unlink(missing_ok=True)
            os.utime(final)
            return
        os.replace(staged, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def size(self, sha256: str) -> int | None:
        """Size from the filesystem."""
        try:
            return self.path(sha256).stat().st_size
        except (FileNotFoundError, ValueError):
            return None

    async def read(self, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Read the range in CHUNK-sized pieces off the event loop."""
        with self.path(sha256).open("rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = await asyncio.to_thread(f.read, min(CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    async def delete(self, sha256: str, unused_since: float) -> bool:
        """Unlink the file if its mtime (touched on every reuse) is older than `unused_since`."""
        path = self.path(sha256)
        try:
            if path.stat().st_mtime >= unused_since:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.thumbnail_path(sha256).unlink()
        with contextlib.suppress(OSError):  # tidy empty fan-out directories
            self.path(sha256).parent.rmdir()
        return True

    def hashes(self) -> list[str]:
        """Every stored file's hash (a full sweep, for pruning)."""
        return [p.name for p in self.root.glob("??/??/*") if _SHA256.fullmatch(p.name)]

    async def iter_hashes(self) -> AsyncIterator[str]:
        """`hashes()`, listed off the event loop."""
        for sha in await asyncio.to_thread(self.hashes):
            yield sha

    async def last_used(self, sha256: str) -> float | None:
        """The file's mtime (touched on every reuse)."""
        try:
            return self.path(sha256).stat().st_mtime
        except (FileNotFoundError, ValueError):
            return None

    async def presign(self, sha256: str, seconds: int, content_type: str) -> str | None:
        """A folder has no URLs of its own: files are streamed by the relay."""
        return None

    async def problem(self) -> str | None:
        """The folder must be writable."""
        if os.access(self.root, os.W_OK | os.X_OK) and os.access(self._tmp, os.W_OK | os.X_OK):
            return None
        return f"ASSET_DIR {str(self.root)!r} is not a writable folder"

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    def clear_staging(self, older_than: float = 0.0, now: float | None = None) -> int:
        """Remove staged files left by a crash, untouched for `older_than` seconds; return how
        many. With a folder shared by replicas, `older_than` spares the downloads another
        replica is writing right now (a download writes at least every `ASSET_STALL_TIMEOUT`)."""
        cutoff = (time.time() if now is None else now) - older_than
        removed = 0
        for leftover in self._tmp.glob("dl-*"):
            try:
                if older_than and leftover.stat().st_mtime >= cutoff:
                    continue
                leftover.unlink()
            except FileNotFoundError:
                continue
            removed += 1
        return removed
