"""API keys on PostgreSQL, with the lookup every request makes served from memory.

A key found by its hash is remembered while this process listens for notices (and at most
`KEY_CACHE_SECONDS`): revoking a key sends a `keys` notice in the revoking transaction, and
every process forgets what it remembered when it hears one, or when its listener lost the
server (notices may have been missed then). Misses are never remembered, so a new key works at
once everywhere. Revocation reaches other replicas as fast as a notice (milliseconds).
"""

from __future__ import annotations

import time
from typing import Any

from service.domain.records import ApiKey
from service.storage.postgres.core import Conn, PgBase, WorkListener, notify

KEY_CACHE_SECONDS = 30.0
KEY_CACHE_MAX = 10_000
KEYS_NOTICE = "keys"
_SELECT_KEY = "SELECT id, name, prefix, created_at, revoked_at, demo FROM api_keys"


def _api_key(row: Any) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


class PgKeys(PgBase):
    """Mixed into `PostgresStorage`."""

    _listener: WorkListener
    _keys: dict[bytes, tuple[ApiKey, float]]  # key hash -> (key, when found, monotonic)
    _keys_generation: int  # bumped by every forget: a read begun before it is not remembered

    def forget_keys(self) -> None:
        """Drop every remembered key (a key changed somewhere, or notices may have been lost)."""
        self._keys.clear()
        self._keys_generation += 1

    async def create_api_key(self, key: ApiKey, key_hash: bytes) -> None:
        """Insert a key row."""
        await self._fetch(
            "INSERT INTO api_keys (id, name, prefix, key_hash, created_at, demo)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            key.id, key.name, key.prefix, key_hash, key.created_at, int(key.demo),
        )  # fmt: skip

    async def list_api_keys(self) -> list[ApiKey]:
        """Every key, newest first."""
        return [_api_key(r) for r in await self._fetch(f"{_SELECT_KEY} ORDER BY created_at DESC")]

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        """Set revoked_at on the key with this id or prefix; every process forgets its keys."""
        sql = (
            "UPDATE api_keys SET revoked_at = $1 WHERE (id = $2 OR prefix = $2)"
            " AND revoked_at IS NULL RETURNING id"
        )

        async def op(conn: Conn) -> bool:
            revoked = bool(await conn.fetch(sql, now, key_id))
            if revoked:
                await notify(conn, KEYS_NOTICE)
            return revoked

        revoked = await self._tx(op)
        self.forget_keys()
        return revoked

    async def api_key_by_hash(self, key_hash: bytes) -> ApiKey | None:
        """Find an active key by hash (remembered while notices would tell of a revocation)."""
        now = time.monotonic()
        listening = self._listener.connected.is_set()
        found = self._keys.get(key_hash)
        if found is not None and listening and now - found[1] < KEY_CACHE_SECONDS:
            return found[0]
        sql = f"{_SELECT_KEY} WHERE key_hash = $1 AND revoked_at IS NULL"
        generation = self._keys_generation
        row = await self._fetchrow(sql, key_hash)
        if row is None:
            self._keys.pop(key_hash, None)
            return None
        key = _api_key(row)
        if listening and generation == self._keys_generation:
            if len(self._keys) >= KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[key_hash] = (key, now)
        return key

    async def api_key_by_id(self, key_id: str) -> ApiKey | None:
        """Find an active key by id (the primary key; not remembered: the dashboard's session
        reads it once per page, and a revocation must end that session at once)."""
        row = await self._fetchrow(f"{_SELECT_KEY} WHERE id = $1 AND revoked_at IS NULL", key_id)
        return None if row is None else _api_key(row)
