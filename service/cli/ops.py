"""Operator commands: prune and purge old results, inspect tasks, back up the database."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from service.clock import SystemClock, rfc3339
from service.domain.records import ApiKey, delivery_json
from service.files.store import AssetStore, StoreUnavailable, open_asset_store
from service.settings import Settings
from service.storage import BackupError, Storage, backup_database, open_storage

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


async def with_storage(settings: Settings) -> Storage:
    """Open the configured storage (migrating it)."""
    storage = open_storage(settings.database_url, settings.storage_options())
    await storage.open()
    return storage


@contextlib.asynccontextmanager
async def asset_store(settings: Settings) -> AsyncIterator[AssetStore]:
    """The file store `ASSET_STORE` names (the folder `ASSET_DIR` when unset), opened."""
    store = open_asset_store(settings.asset_store, settings.asset_dir)
    await store.open()
    try:
        problem = await store.problem()  # before any row changes
        if problem is not None:
            raise StoreUnavailable(problem)
        yield store
    finally:
        await store.close()


def store_failed(exc: StoreUnavailable) -> int:
    """A store that is down or refuses: say which setting to fix, exit 1."""
    print(f"file store unavailable: {exc.message}", file=sys.stderr)
    return 1


async def prune(settings: Settings, older_than: float | None, dry_run: bool = False) -> int:
    """Retire stored copies of tasks completed before the cutoff; delete unreferenced files."""
    try:
        async with asset_store(settings) as store:
            return await _prune(settings, store, older_than, dry_run)
    except StoreUnavailable as exc:
        return store_failed(exc)


async def _prune(
    settings: Settings, store: AssetStore, older_than: float | None, dry_run: bool
) -> int:
    seconds = older_than if older_than is not None else settings.asset_retention_days * 86400
    started = SystemClock().now()
    cutoff = started - seconds
    storage = await with_storage(settings)
    pruned, removed = 0, 0
    try:
        if dry_run:
            pruned = await storage.prune_count(cutoff)
            removed = await _would_remove(
                store, lambda sha: storage.hash_in_use_after_prune(sha, cutoff), started
            )
        else:
            while True:
                count, orphans = await storage.prune_assets(cutoff, 500, started)
                pruned += count
                for sha in orphans:
                    removed += await store.delete(sha, unused_since=started - 60)
                if count < 500:
                    break
            removed += await sweep(store, storage, started)
    finally:
        await storage.close()
    retire, remove = ("would retire", "would remove") if dry_run else ("retired", "removed")
    print(f"{retire} {pruned} copies of tasks completed before {rfc3339(cutoff)}")
    print(f"{remove} {removed} files no remaining task refers to")
    return 0


async def sweep(store: AssetStore, storage: Storage, started: float) -> int:
    """Delete files no stored copy refers to, e.g. skipped by an earlier run; return how many."""
    removed = 0
    async for sha in store.iter_hashes():
        if not await storage.hash_in_use(sha):
            removed += await store.delete(sha, unused_since=started - 60)
    return removed


DURATION_FORMS = "30d (days), 12h (hours), 90m (minutes) or 45s (seconds)"


def duration(text: str) -> float:
    """Seconds in `30d`, `12h`, `90m` or `45s`; the unit is required.

    A bare number is refused: `purge --older-than 30` once meant 30 seconds to the code and
    30 days to the operator, and deleted every finished task.
    """
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}; write {DURATION_FORMS}")
    if not found[2]:
        raise argparse.ArgumentTypeError(f"{text.strip()!r} has no unit; write {DURATION_FORMS}")
    return float(found[1]) * _UNITS[found[2]]


def _key_id(keys: Sequence[ApiKey], wanted: str) -> str | None:
    wanted = wanted.rstrip("…")  # as `keys list` shows prefixes
    return next((k.id for k in keys if wanted in (k.id, k.prefix)), None)


async def tasks(settings: Settings, ns: argparse.Namespace) -> int:
    storage = await with_storage(settings)
    try:
        if ns.tasks_command == "list":
            key_id = None
            if ns.key is not None:
                key_id = _key_id(await storage.list_api_keys(), ns.key)
                if key_id is None:
                    print(f"no key with id or prefix {ns.key!r}", file=sys.stderr)
                    return 1
            found = await storage.list_all_tasks(
                status=ns.status, model=ns.model, api_key_id=key_id, limit=ns.limit
            )
            for t in found:
                created = rfc3339(t.created_at)
                print(f"{t.id}\t{t.status}\t{t.progress}%\t{t.model}\t{created}\t{t.api_key_id}")
            return 0
        task = await storage.task(ns.task_id)
        if task is None:
            print(f"no task with id {ns.task_id!r}", file=sys.stderr)
            return 1
        shown: dict[str, Any] = task.to_json(_base_url(settings))
        shown["events"] = [
            {
                "source": e.source,
                "outcome": e.outcome,
                "detail": e.detail,
                "received_at": rfc3339(e.received_at),
                "body_bytes": len(e.body),
            }
            for e in await storage.events(task.id)
        ]
        shown["deliveries"] = [delivery_json(d, a) for d, a in await storage.deliveries_of(task.id)]
        print(json.dumps(shown, indent=2, ensure_ascii=False))
        return 0
    finally:
        await storage.close()


def _base_url(settings: Settings) -> str:
    """The base of our own result URLs as the API shows them (a note on stderr if guessed)."""
    if settings.public_base_url:
        return settings.public_base_url
    if settings.demo_mode:  # a demo relay tells clients its own address
        from service.cli.demo import own_url

        base = own_url(settings.host, settings.port)
        print(
            f"PUBLIC_BASE_URL is unset: result URLs assume the demo relay at {base} (HOST, PORT)",
            file=sys.stderr,
        )
        return base
    print(
        "PUBLIC_BASE_URL is unset: result URLs are relative to the relay's address",
        file=sys.stderr,
    )
    return ""


async def purge(settings: Settings, older_than: float, dry_run: bool, batch: int) -> int:
    """Delete old finished tasks with their rows, then the files no task refers to."""
    try:
        async with asset_store(settings) as store:
            return await _purge(settings, store, older_than, dry_run, batch)
    except StoreUnavailable as exc:
        return store_failed(exc)


async def _purge(
    settings: Settings, store: AssetStore, older_than: float, dry_run: bool, batch: int
) -> int:
    started = SystemClock().now()
    cutoff = started - older_than
    storage = await with_storage(settings)
    try:
        if dry_run:
            counts = await storage.purge_counts(cutoff)
            removed = await _would_remove(
                store, lambda sha: storage.hash_in_use_after_purge(sha, cutoff), started
            )
        else:
            counts = await storage.purge_tasks(cutoff, batch)
            counts["held"] = (await storage.purge_counts(cutoff))["held"]
            removed = await sweep(store, storage, started)
    finally:
        await storage.close()
    verb = "would delete" if dry_run else "deleted"
    print(
        f"{verb} {counts['tasks']} tasks completed before {rfc3339(cutoff)}"
        f" with {counts['events']} events, {counts['assets']} asset records,"
        f" {counts['deliveries']} deliveries and {counts['delivery_attempts']} delivery attempts"
    )
    if counts["held"]:
        print(f"kept {counts['held']} tasks still copying results or delivering callbacks")
    print(f"{'would remove' if dry_run else 'removed'} {removed} files no remaining task refers to")
    return 0


async def _would_remove(
    store: AssetStore, in_use: Callable[[str], Awaitable[bool]], started: float
) -> int:
    """How many files `sweep` would delete once `in_use` holds, without deleting any."""
    removed = 0
    async for sha in store.iter_hashes():
        if not await in_use(sha):
            used = await store.last_used(sha)  # what `store.delete(sha, started - 60)` checks
            removed += used is not None and used < started - 60
    return removed


def backup(settings: Settings, path: str, *, force: bool = False) -> int:
    """`db backup PATH`: refuses to replace a file or create folders unless `force`."""
    target = Path(path)
    try:
        if not force and target.exists() and not target.is_dir():
            raise BackupError(f"{target} already exists; pass --force to replace it")
        if not force and not target.parent.is_dir():
            raise BackupError(f"folder {target.parent} does not exist; create it or pass --force")
        made = backup_database(settings.database_url, target)
    except (ValueError, BackupError) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"backed up {made.source} to {made.path}: {made.bytes} bytes,"
        f" schema version {made.schema_version}, integrity ok"
    )
    return 0
