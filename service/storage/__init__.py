"""Storage backends, chosen by the scheme of `DATABASE_URL` (each imported only when chosen)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from service.storage.base import (
    Backup,
    BackupError,
    DuplicateIdempotencyKey,
    Event,
    Storage,
    StorageOptions,
)

__all__ = [
    "Backup",
    "BackupError",
    "DuplicateIdempotencyKey",
    "Event",
    "Storage",
    "StorageOptions",
    "backup_database",
    "open_storage",
    "sqlite_path",
]
SCHEMES = ("sqlite", "postgresql", "postgres")


def sqlite_path(url: str) -> str:
    """Return the file path of a `sqlite:///path` URL (relative) or `sqlite:////abs` (absolute)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"not a sqlite file URL: {url!r} (expected sqlite:///path/to/file.db)")
    path = url[len(prefix) :]
    if path in (":memory:", ""):
        raise ValueError("an in-memory SQLite database cannot be shared; use a file")
    return path


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].lower()


def open_storage(url: str, options: StorageOptions | None = None) -> Storage:
    """Build the backend for `url` (not opened yet); its driver is imported only now."""
    options = options or StorageOptions()
    scheme = _scheme(url)
    if scheme == "sqlite":
        from service.storage.sqlite import SQLiteStorage

        return SQLiteStorage(
            sqlite_path(url),
            synchronous=options.synchronous,
            busy_timeout_ms=options.busy_timeout_ms,
            batch_max=options.batch_max,
            on_commit=options.on_commit,
            on_task_change=options.on_task_change,
        )
    if scheme in ("postgresql", "postgres"):
        from service.storage.postgres import PostgresStorage

        return PostgresStorage(
            url,
            pool_size=options.pool_size,
            busy_timeout_ms=options.busy_timeout_ms,
            on_work=options.on_work,
            on_task_change=options.on_task_change,
        )
    raise ValueError(f"unsupported DATABASE_URL scheme {scheme!r}; supported: {', '.join(SCHEMES)}")


def backup_database(
    url: str,
    dest: str | Path,
    *,
    step_pages: int | None = None,
    pause: Callable[[], None] | None = None,
) -> Backup:
    """Copy the live database at `url` to `dest` with its backend's online backup, verified.

    Blocking. The database need not be open here and is copied as it is (never migrated);
    `dest` is only ever replaced by a complete, verified copy (`BackupError` otherwise).
    SQLite: the file, `step_pages` pages at a time with `pause` between steps. PostgreSQL:
    `pg_dump --format=custom` (a `BackupError` says what to use when it is not installed).
    """
    scheme = _scheme(url)
    if scheme == "sqlite":
        from service.storage.sqlite.ops import backup_database as backup_file

        return backup_file(sqlite_path(url), dest, step_pages=step_pages, pause=pause)
    if scheme in ("postgresql", "postgres"):
        from service.storage.postgres.backup import backup_database as dump

        return dump(url, dest)
    raise ValueError(
        f"unsupported DATABASE_URL scheme {scheme!r}; backups support {', '.join(SCHEMES)}"
    )
