"""A PostgreSQL session as the backend runs it: how each pooled connection is set up and
returned, the migrations applied at open (one process at a time), and URLs in messages."""

from __future__ import annotations

from typing import Any

from service.domain.errors import StorageUnavailable
from service.storage.postgres.core import Conn, no_nul
from service.storage.postgres.migrations import LATEST, MIGRATIONS

# Any fixed number: the advisory lock that one migrating process holds while the others wait.
MIGRATION_LOCK = 0x67727361  # "grsa"


def _same(text: str) -> str:
    return text


async def setup_connection(conn: Any) -> None:
    """Every pooled connection encodes text parameters through `no_nul` (arrays of text do
    not go through it: their builders call `no_nul` themselves)."""
    await conn.set_type_codec(
        "text", schema="pg_catalog", encoder=no_nul, decoder=_same, format="text"
    )


async def keep_session(_conn: Any) -> None:
    """What a pooled connection needs on its way back to the pool beyond asyncpg's rollback of
    an open transaction: nothing. The backend never leaves session state behind (no SET, no
    session advisory lock, no LISTEN or cursor on a pooled connection), and asyncpg's default
    reset costs one more round trip per query (it halved the lookups' throughput)."""


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, _, rest = url.partition("://")
    credentials, at, place = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}@{place}"


async def migrate(conn: Conn) -> int:
    """Apply pending migrations in one transaction under an advisory lock: replicas starting
    together take turns, and the later ones find the schema done. Returns the version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = await conn.fetchval("SELECT version FROM schema_version")
        if version is None:
            version = 0
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        if version > LATEST:
            raise StorageUnavailable(
                f"database schema {version} is newer than this code ({LATEST})"
            )
        for number in range(version + 1, LATEST + 1):
            for statement in MIGRATIONS[number - 1]:
                await conn.execute(statement)
            await conn.execute("UPDATE schema_version SET version = $1", number)
        return LATEST
