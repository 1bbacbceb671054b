"""The storage contract: the few operations the service needs, whatever the database."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from service.domain.records import ApiKey, Asset, Attempt, Delivery, EventOutcome, Task, TaskRef
from service.domain.transitions import Decision

EventSource = Literal["callback", "poll", "submit", "local"]


@dataclass(frozen=True, slots=True)
class Event:
    """A raw upstream message (or local decision) and what it did to its task."""

    task_id: str
    source: EventSource
    received_at: float
    body: bytes
    outcome: EventOutcome | None = None
    detail: str | None = None


class DuplicateIdempotencyKey(Exception):
    """Another task already holds this (api key, Idempotency-Key) pair."""


class Storage(Protocol):
    """What every storage backend offers. Every write is durable when its await returns."""

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None:
        """Finish pending writes and disconnect."""

    def observe_commits(self, callback: Callable[[float, int], None]) -> None:
        """Have `callback(started, batch_size)` called after every commit (metrics)."""

    async def ping(self) -> None:
        """Raise `StorageUnavailable` unless the database answers a read and accepts a write."""

    async def schema_version(self) -> int:
        """Return the applied migration version."""

    async def create_api_key(self, key: ApiKey, key_hash: bytes) -> None:
        """Store a new API key by its hash."""

    async def list_api_keys(self) -> list[ApiKey]:
        """Every API key, newest first."""

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        """Revoke a key by id or prefix; False if none matched."""

    async def api_key_by_hash(self, key_hash: bytes) -> ApiKey | None:
        """The active (not revoked) key with this hash."""

    async def insert_task(self, task: Task) -> None:
        """Store a new task; raise `DuplicateIdempotencyKey` if its key is taken."""

    async def task(self, task_id: str, api_key_id: str | None = None) -> Task | None:
        """One task by id, optionally only if it belongs to `api_key_id`."""

    async def task_by_idempotency_key(self, api_key_id: str, key: str) -> Task | None:
        """The task created with this Idempotency-Key by this API key."""

    async def task_by_token_hash(self, token_hash: bytes) -> TaskRef | None:
        """The task whose callback token hashes to `token_hash` (id, upstream id, status)."""

    async def list_tasks(
        self,
        api_key_id: str,
        *,
        status: str | None,
        model: str | None,
        limit: int,
        before_seq: int | None,
    ) -> list[Task]:
        """The caller's tasks newest first, strictly older than `before_seq` (keyset)."""

    async def update_task(self, task_id: str, changes: dict[str, Any]) -> None:
        """Write column changes unconditionally (submission bookkeeping)."""

    async def apply(
        self,
        task_id: str,
        decide: Callable[[Task], Decision],
        event: Event | None,
        *,
        payload: bool = True,
    ) -> tuple[Decision, Task] | None:
        """Atomically read the task, decide, write the changes and the event with its outcome.

        Returns None when the task does not exist. With `payload=False` the task handed to
        `decide` (and returned) has its JSON columns (`input`, `results`, `metadata`) left
        empty: state transitions never read them, and decoding them costs the hot path.
        """

    async def claim_due(self, now: float, limit: int, lease_until: float) -> list[Task]:
        """Take up to `limit` tasks whose poll is due, pushing their next poll to `lease_until`."""

    async def events(self, task_id: str) -> list[Event]:
        """Every stored event of a task, oldest first."""

    async def claim_assets(self, now: float, limit: int, lease_until: float) -> list[Asset]:
        """Take up to `limit` due copy jobs, leasing them until `lease_until`."""

    async def save_asset(self, asset: Asset, now: float) -> None:
        """Store a copy job's new state and its task's `results` entry atomically."""

    async def asset(self, task_id: str, n: int) -> Asset | None:
        """One copy job / stored file record."""

    async def assets_of(self, task_id: str) -> list[Asset]:
        """Every copy job of a task, in result order."""

    async def queue_stats(self, now: float) -> dict[str, tuple[int, float]]:
        """Per queue (poll, assets, deliveries): jobs due now and the oldest one's age."""

    async def status_counts(self) -> dict[str, int]:
        """Tasks by status."""

    async def list_all_tasks(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        api_key_id: str | None = None,
        limit: int = 50,
    ) -> list[Task]:
        """Tasks of every key (or only `api_key_id`'s), newest first."""

    async def purge_counts(self, completed_before: float) -> dict[str, int]:
        """What `purge_tasks` would delete now, per table, and `held`: old tasks still busy."""

    async def purge_tasks(self, completed_before: float, batch: int) -> dict[str, int]:
        """Delete idle terminal tasks completed before the cutoff and their rows, in batches."""

    async def hash_in_use_after_purge(self, sha256: str, completed_before: float) -> bool:
        """True if a stored copy outside what `purge_tasks` would delete refers to this file."""

    async def hash_in_use(self, sha256: str) -> bool:
        """True while some stored copy refers to this file."""

    async def prune_assets(
        self, completed_before: float, limit: int, now: float = 0.0
    ) -> tuple[int, list[str]]:
        """Retire copies of old tasks; return (count, hashes no stored copy refers to)."""

    async def prune_count(self, completed_before: float) -> int:
        """How many stored copies `prune_assets` would retire now."""

    async def hash_in_use_after_prune(self, sha256: str, completed_before: float) -> bool:
        """True if a stored copy that `prune_assets` would keep refers to this file."""

    async def add_signing_secret(
        self, api_key_id: str, secret: str, now: float, retire_others_at: float | None
    ) -> None:
        """Add a current signing secret; older ones stop signing at `retire_others_at`."""

    async def signing_secrets(self, api_key_id: str, now: float) -> list[str]:
        """The secrets that sign right now, newest first."""

    async def claim_deliveries(
        self, now: float, lease_until: float, free: int, busy: Mapping[str, int], per_host: int
    ) -> list[Delivery]:
        """Lease due deliveries, at most `free` in all and `per_host` per destination host."""

    async def record_attempt(self, delivery: Delivery, attempt: Attempt, gone: bool) -> None:
        """Store an attempt and the delivery's new state; `gone` retires its URL."""

    async def deliveries_of(self, task_id: str) -> list[tuple[Delivery, list[Attempt]]]:
        """A task's deliveries with every attempt."""

    async def redeliver(self, task_id: str, now: float) -> Delivery | None:
        """Queue the task's final event again under the same id."""

    async def replay_dead(self, api_key_id: str, since: float, now: float) -> int:
        """Re-queue the key's dead deliveries that died at or after `since`."""
