"""The PostgreSQL server the tests use: the one place that knows where it is and how to reach it.

Its admin URL comes from `TEST_POSTGRES_URL` (default: the local server, trust auth, user
`postgres`). Each test makes its own database with `create_database()` and drops it with
`drop_database(url)`. An unreachable server fails the test, never skips it.

Every call here is synchronous: it runs asyncpg in a worker thread with its own event loop, so
it works the same from sync tests, from async tests and fixtures (whose loop is running in the
calling thread), and from `python -m tests.pgserver`, which `scripts/test` runs to check the
server before the PostgreSQL run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT = 10.0  # seconds; a hang guard only
T = TypeVar("T")


class Unreachable(Exception):
    """The server did not take a connection."""


def admin_url() -> str:
    """The URL of a database on the test server that may create and drop databases."""
    return os.environ.get("TEST_POSTGRES_URL") or DEFAULT_URL


def database_url(name: str) -> str:
    """The admin URL with its database replaced by `name`."""
    parts = urlsplit(admin_url())
    return urlunsplit(parts._replace(path=f"/{name}"))


def _database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name.startswith("relay_test_") or not name.replace("_", "").isalnum():
        raise ValueError(f"not a database made by create_database(): {url!r}")
    return name


def _in_thread(work: Callable[[], Awaitable[T]]) -> T:
    """Run `work()` to completion on a fresh event loop in a worker thread; return its result."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        async def main() -> T:
            return await work()

        try:
            outcome.append(asyncio.run(main()))
        except BaseException as exc:  # handed to the calling thread as is
            failure.append(exc)

    thread = threading.Thread(target=run, name="pgserver", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unreachable(f"{type(exc).__name__}: {exc}") from exc


def _unreachable_message(url: str, error: object) -> str:
    return (
        f"PostgreSQL is unreachable at {url}: {error}. The PostgreSQL suite never skips;"
        " start it or set TEST_POSTGRES_URL"
    )


def _admin(statement: str) -> None:
    async def work() -> None:
        conn = await _connect(admin_url())
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    try:
        _in_thread(work)
    except Unreachable as exc:
        pytest.fail(_unreachable_message(admin_url(), exc))


def create_database() -> str:
    """Make an empty database with a unique name on the test server; return its URL."""
    name = f"relay_test_{os.getpid()}_{secrets.token_hex(6)}"
    _admin(f'CREATE DATABASE "{name}"')
    return database_url(name)


def drop_database(url: str) -> None:
    """Drop a database `create_database()` made, even while connections to it remain."""
    _admin(f'DROP DATABASE IF EXISTS "{_database_name(url)}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A database of its own on the test server (its URL), dropped when the block ends."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


def placeholders(sql: str) -> str:
    """SQLite's `?` parameters as PostgreSQL's `$1..$n` (a `?` inside a quoted literal stays)."""
    out: list[str] = []
    quote: str | None = None
    n = 0
    for char in sql:
        if quote is not None:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(char)
    return "".join(out)


def fetch(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one query (SQLite `?` placeholders) on the database at `url`; rows as tuples."""

    async def work() -> list[tuple[Any, ...]]:
        conn = await _connect(url)
        try:
            records = await conn.fetch(placeholders(sql), *params)
        finally:
            await conn.close()
        return [tuple(record.values()) for record in records]

    try:
        return _in_thread(work)
    except Unreachable as exc:
        pytest.fail(_unreachable_message(url, exc))


def main() -> int:
    """Check that the test server answers; exit 1 with a clear message if it does not."""

    async def work() -> None:
        conn = await _connect(admin_url())
        await conn.close()

    try:
        _in_thread(work)
    except Unreachable as exc:
        print(_unreachable_message(admin_url(), exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
