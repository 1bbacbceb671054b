"""Databases as an older release of the relay left them, for migration tests: every migration
up to `version` applied, the contract suite's API key inserted, then the caller's own rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg

from service.storage.postgres import migrations as pg_migrations
from service.storage.sqlite import migrations as sqlite_migrations
from tests.contract.conftest import KEY, key_hash

_KEY = "INSERT INTO api_keys (id, name, prefix, key_hash, created_at) VALUES ({})"
_KEY_VALUES = (KEY.id, KEY.name, KEY.prefix, key_hash(KEY), KEY.created_at)


def old_sqlite(path: Path, version: int, *rows: str) -> None:
    """A SQLite file at schema `version`, holding the key and `rows` (plain SQL statements)."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        for migration in sqlite_migrations.MIGRATIONS[:version]:
            for statement in migration:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute(_KEY.format(", ".join("?" * len(_KEY_VALUES))), _KEY_VALUES)
        for row in rows:
            conn.execute(row)


async def old_postgres(url: str, version: int, *rows: str) -> None:
    """A PostgreSQL database at schema `version`, holding the key and `rows`."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for migration in pg_migrations.MIGRATIONS[:version]:
            for statement in migration:
                await conn.execute(statement)
        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        placeholders = ", ".join(f"${n + 1}" for n in range(len(_KEY_VALUES)))
        await conn.execute(_KEY.format(placeholders), *_KEY_VALUES)
        for row in rows:
            await conn.execute(row)
    finally:
        await conn.close()
