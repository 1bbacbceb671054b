"""`grsai-relay keys`: create, list and revoke client API keys; rotate their signing secrets."""

from __future__ import annotations

import argparse
import sys

from service.cli.ops import with_storage
from service.clock import SystemClock, rfc3339
from service.domain.credentials import SystemEntropy, hash_secret, new_api_key
from service.domain.records import ApiKey
from service.settings import Settings
from service.storage import Storage
from service.upstream.signing import new_secret


async def add_key(storage: Storage, name: str, *, demo: bool = False) -> tuple[ApiKey, str, str]:
    """Store a new API key (hashed) with its webhook signing secret; return key, secret, signing."""
    made = new_api_key(SystemEntropy())
    now = SystemClock().now()
    key = ApiKey(made.id, name, made.prefix, now, demo=demo)
    await storage.create_api_key(key, hash_secret(made.secret))
    signing = new_secret()
    await storage.add_signing_secret(made.id, signing, now, retire_others_at=None)
    return key, made.secret, signing


async def create_key(settings: Settings, name: str) -> tuple[str, str]:
    """Create an API key (stored hashed) and its webhook signing secret; return both."""
    storage = await with_storage(settings)
    try:
        _, secret, signing = await add_key(storage, name)
        return secret, signing
    finally:
        await storage.close()


async def rotate_secret(settings: Settings, key_id: str, grace_hours: float | None) -> str | None:
    """A new signing secret for a key (by id or prefix); the old one signs for a grace period."""
    storage = await with_storage(settings)
    try:
        found = [k for k in await storage.list_api_keys() if key_id in (k.id, k.prefix)]
        if not found or found[0].revoked_at is not None:
            return None
        hours = settings.secret_rotation_grace_hours if grace_hours is None else grace_hours
        now = SystemClock().now()
        signing = new_secret()
        await storage.add_signing_secret(found[0].id, signing, now, now + hours * 3600)
        return signing
    finally:
        await storage.close()


def _state(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return f"revoked {rfc3339(key.revoked_at)}"
    return "active (demo mode only)" if key.demo else "active"


async def keys(settings: Settings, ns: argparse.Namespace) -> int:
    """Run `keys create|list|revoke|rotate-secret`."""
    if ns.keys_command == "create":
        secret, signing = await create_key(settings, ns.name)
        print(secret)
        print(signing)
        print(
            "Line 1 is the API key (shown once, stored only as a hash); line 2 is the secret\n"
            "that signs callbacks to your callback_url (Standard Webhooks, whsec_...).",
            file=sys.stderr,
        )
        return 0
    if ns.keys_command == "rotate-secret":
        rotated = await rotate_secret(settings, ns.key_id, ns.grace_hours)
        if rotated is None:
            print(f"no active key with id or prefix {ns.key_id!r}", file=sys.stderr)
            return 1
        print(rotated)
        print(
            "New signing secret; the old one keeps signing during the grace period.",
            file=sys.stderr,
        )
        return 0
    storage = await with_storage(settings)
    try:
        if ns.keys_command == "list":
            print("id\tprefix\tname\tcreated_at\tstate")
            for key in await storage.list_api_keys():
                print(
                    f"{key.id}\t{key.prefix}\t{key.name}\t{rfc3339(key.created_at)}\t{_state(key)}"
                )
            return 0
        # an ellipsis pasted from an older `keys list` is not part of the prefix
        if await storage.revoke_api_key(ns.key_id.rstrip("…"), SystemClock().now()):
            print(f"revoked {ns.key_id}")
            return 0
        print(f"no active key with id or prefix {ns.key_id!r}", file=sys.stderr)
        return 1
    finally:
        await storage.close()
