"""A throwaway PostgreSQL database for a test, made and dropped with asyncpg.

PostgreSQL must run at PG_ADMIN_URL (default: the local server, user postgres, trust auth):
the tests that need it fail with a clear message when it does not, never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def database_url(name: str) -> str:
    """The URL of database `name` on the admin URL's server."""
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def _admin(sql: str) -> list[Any]:
    try:
        conn = await asyncpg.connect(ADMIN_URL, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is needed at {ADMIN_URL} (set PG_ADMIN_URL) and could not be reached:"
            f" {type(exc).__name__}: {exc}"
        )
    try:
        rows: list[Any] = await conn.fetch(sql)
    finally:
        await conn.close()
    return rows


def databases(prefix: str) -> set[str]:
    """The names of the server's databases that start with `prefix`."""
    rows = asyncio.run(_admin("SELECT datname FROM pg_database"))
    return {str(row[0]) for row in rows if str(row[0]).startswith(prefix)}


def create_database(name: str) -> str:
    """Create an empty database `name`; return its URL."""
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return database_url(name)


def drop_database(name: str) -> None:
    """Drop database `name`, closing whatever is still connected to it."""
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def fresh_database(prefix: str = "grsai_test") -> Iterator[str]:
    """A new empty database for the block (its URL), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = create_database(name)
    try:
        yield url
    finally:
        drop_database(name)
