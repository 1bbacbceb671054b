"""The storage contract: the few operations the service needs, whatever the database.

A backend executes statements and holds no business rule: what a change means (the state
machine, the outbox, the results projection, fairness, retention) is decided in
`service.domain`, and the backend stores the decision. `tests/unit/test_storage_contract.py`
runs every backend through the same promises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from service.domain.records import ApiKey, Asset, Attempt, Delivery, EventOutcome, Task, TaskRef
from service.domain.transitions import Decision

EventSource = Literal["callback", "poll", "submit", "local", "stream"]


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


class BackupError(Exception):
    """The database could not be copied, or the copy did not verify."""


@dataclass(frozen=True, slots=True)
class StorageOptions:
    """How to run a backend (each takes what applies to it); none of it changes what is stored."""

    synchronous: str = "NORMAL"  # SQLite: FULL also survives a power loss
    busy_timeout_ms: int = 5000  # how long a write waits for another process's lock
    batch_max: int = 256  # writes per group commit
    on_commit: Callable[[float, int], None] | None = None  # (perf_counter at start, batch size)
    pool_size: int = 10  # PostgreSQL: connections per process
    # Called with a queue's name ("copier", "deliverer") when any process sharing the database
    # queued work for it (PostgreSQL: LISTEN/NOTIFY). A single-process backend never calls it.
    on_work: Callable[[str], None] | None = None
    # Live status: called with a task's id after a committed change a client can see (a column
    # of `SEEN_COLUMNS`, or a result entry); on PostgreSQL also for such changes committed by
    # other processes, and with None when notices may have been missed (any task may have
    # changed). Called on the event loop; it must not block.
    on_task_change: Callable[[str | None], None] | None = None


# The task columns a client sees (`Task.to_json`): a change to only other columns (the poll
# schedule, the submit state) calls no `on_task_change`. `tests/unit/test_watch.py` checks
# this list against `Task.to_json`.
SEEN_COLUMNS = frozenset(
    {"status", "progress", "model", "upstream_id", "input", "results", "failure_reason", "error",
     "metadata", "callback_url", "callback_format", "created_at", "updated_at", "completed_at"}
)  # fmt: skip


def seen_change(changes: Mapping[str, object]) -> bool:
    """True when `changes` (a decision's column changes) touch what a client sees."""
    return not SEEN_COLUMNS.isdisjoint(changes)


@dataclass(frozen=True, slots=True)
class Backup:
    """A verified copy of the database."""

    path: Path
    bytes: int
    schema_version: int
    source: str  # what was copied, as an operator names it (the database file)


class Storage(Protocol):
    """What every storage backend offers.

    Every write is durable when its await returns (it survives the process being killed right
    after); a write whose await raised left nothing behind. Reads see every acknowledged write.
    `StorageUnavailable` means "not now, try again": the database is busy, full or read-only.
    """

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None:
        """Finish pending writes and disconnect."""

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

    async def api_key_by_id(self, key_id: str) -> ApiKey | None:
        """The active (not revoked) key with this id (the dashboard's session names it)."""

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

    async def apply(
        self, task_id: str, decide: Callable[[Task], Decision], event: Event | None
    ) -> Decision | None:
        """Read the task, `decide`, and store the decision, all in one transaction.

        Stored together: the column changes, a copy job per URL of `decision.copies` (numbered
        from 0), `decision.progress_event` and `decision.final_event` as deliveries (dead at
        once if its URL answered 410 before; never queued twice), and `event` with the
        decision's outcome and detail where it has none of its own. Returns the decision, or
        None when the task does not exist.

        `decide` must be pure: a backend may call it more than once for one apply (a batch is
        run again when another write in it failed), and only the last call counts. It gets the
        task without its payload (`input`, `results` and `metadata` may be empty): decisions
        never read them.
        """

    async def take_token(self, bucket: str, now: float, rate: float, burst: float) -> float:
        """Spend one token of `bucket` (`domain.limits`); return 0.0, or the seconds until one
        is there (nothing spent). Every process sharing the database shares the bucket."""

    async def claim_due(self, now: float, limit: int, lease_until: float) -> list[Task]:
        """Take up to `limit` tasks whose poll is due, pushing their next poll to `lease_until`."""

    async def switch_to_polling(self, now: float) -> int:
        """Every open callback-mode task goes to poll mode, its poll due at `now` (the public
        URL its callbacks were sent to is gone); return how many. Polls already due keep their
        time."""

    async def events(self, task_id: str) -> list[Event]:
        """Every stored event of a task, oldest first."""

    async def claim_assets(self, now: float, limit: int, lease_until: float) -> list[Asset]:
        """Take up to `limit` due copy jobs, leasing them until `lease_until`."""

    async def save_asset(self, asset: Asset, now: float) -> None:
        """Store a copy job's new state, its task's `results` entry (`domain.results`) and,
        once the task's last copy settled, its final event (`domain.outbox`), atomically."""

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
        """Store an attempt and the delivery's new state. `gone` retires its URL: every pending
        delivery to it dies now, and later final events to it are stored dead."""

    async def deliveries_of(self, task_id: str) -> list[tuple[Delivery, list[Attempt]]]:
        """A task's deliveries with every attempt."""

    async def redeliver(self, task_id: str, now: float) -> Delivery | None:
        """Queue the task's final event again under the same id (its URL is no longer gone)."""

    async def replay_dead(self, api_key_id: str, since: float, now: float) -> int:
        """Re-queue the key's dead deliveries that died at or after `since` (not to gone URLs)."""
