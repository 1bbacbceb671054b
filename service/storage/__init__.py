"""Storage backends, chosen by the scheme of `DATABASE_URL`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.storage.base import DuplicateIdempotencyKey, Event, Storage

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["DuplicateIdempotencyKey", "Event", "Storage", "open_storage", "sqlite_path"]


def sqlite_path(url: str) -> str:
    """Return the file path of a `sqlite:///path` URL (relative) or `sqlite:////abs` (absolute)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"not a sqlite file URL: {url!r} (expected sqlite:///path/to/file.db)")
    path = url[len(prefix) :]
    if path in (":memory:", ""):
        raise ValueError("an in-memory SQLite database cannot be shared; use a file")
    return path


def open_storage(settings: Settings) -> Storage:
    """Build the backend for `settings.database_url` (its driver is imported lazily)."""
    url = settings.database_url
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from service.storage.sqlite import SQLiteStorage

        return SQLiteStorage(
            sqlite_path(url),
            synchronous=settings.sqlite_synchronous,
            busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            batch_max=settings.write_batch_max,
        )
    raise ValueError(f"unsupported DATABASE_URL scheme {scheme!r}; supported: sqlite")
