"""The rules of the delivery outbox: which event is queued when, under which id, to whom a 410
Gone closes the door, and how due deliveries share the senders fairly between hosts.

Every task with a callback URL gets one final event (`task.succeeded` / `task.failed`), queued
once the last result copy settled. A task whose callbacks are GrsAI-shaped (`callback_format`
"grsai") also gets one `task.progress` event per progress value it reaches, as GrsAI sends a
progress post for each; the value is part of the event's id, so news repeating a value queues
nothing new.

A backend stores what these functions decide (in the same transaction as the change that
caused it: a transactional outbox); it holds no rule of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.domain.records import TERMINAL, Delivery

# The event a client hears when its task becomes final, by the task's final status.
FINAL_EVENTS: Mapping[str, str] = {status: f"task.{status}" for status in sorted(TERMINAL)}
PROGRESS_EVENT = "task.progress"  # a GrsAI-shaped task's progress rose (or it started running)
GONE = "this URL answered 410 Gone"  # why the pending deliveries to a retired URL died
GONE_BEFORE = "this URL answered 410 Gone before"  # why a new event to it is dead at once
# Why a progress event is not sent: the task became final first, and a "running" post after
# the final one would send the client's view of its task backwards.
SUPERSEDED = "superseded: the task was final before this progress event was sent"


def delivery_id(task_id: str, event_type: str, progress: int | None = None) -> str:
    """The event's webhook-id: stable, so every retry and redelivery reuses it (and a progress
    value already announced is never announced twice)."""
    name = f"{task_id}/{event_type}" if progress is None else f"{task_id}/{event_type}/{progress}"
    return "msg_" + hashlib.sha256(name.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """The intent to tell a client of a change to its task (one outbox row, queued once)."""

    task_id: str
    api_key_id: str
    event_type: str
    url: str
    at: float
    progress: int | None = None  # the value a progress event announces

    @property
    def delivery_id(self) -> str:
        """Its webhook-id."""
        return delivery_id(self.task_id, self.event_type, self.progress)

    def row(self, gone: bool) -> Delivery:
        """The outbox row: due now, or dead at once when its URL answered 410 Gone before."""
        return Delivery(
            id=self.delivery_id,
            task_id=self.task_id,
            api_key_id=self.api_key_id,
            event_type=self.event_type,
            url=self.url,
            status="dead" if gone else "pending",
            attempts=0,
            next_attempt_at=None if gone else self.at,
            event_at=self.at,
            dead_at=self.at if gone else None,
            last_error=GONE_BEFORE if gone else None,
            progress=self.progress,
        )


def final_event(
    task_id: str,
    api_key_id: str,
    status: str,
    callback_url: str | None,
    at: float,
    *,
    copies_pending: bool,
) -> OutboxEvent | None:
    """The final event due now: the task is final, wants callbacks and has no copy pending
    (the event waits for the last copy, so the client is told once its files are stored)."""
    if status not in TERMINAL or not callback_url or copies_pending:
        return None
    return OutboxEvent(task_id, api_key_id, FINAL_EVENTS[status], callback_url, at)


def progress_event(
    task_id: str,
    api_key_id: str,
    callback_format: str,
    callback_url: str | None,
    progress: int,
    at: float,
) -> OutboxEvent | None:
    """The progress event due now that a task runs at `progress` (a value it had not reached
    before): only for GrsAI-shaped callbacks; the relay's own callbacks announce the end only."""
    if callback_format != "grsai" or not callback_url:
        return None
    return OutboxEvent(task_id, api_key_id, PROGRESS_EVENT, callback_url, at, progress)


def superseded(delivery: Delivery, task_status: str) -> bool:
    """True for a progress event whose task is final by now: it is dropped, not sent (the
    final event follows, or went already)."""
    return delivery.progress is not None and task_status in TERMINAL


def host_of(url: str) -> str:
    """A URL's host, lower-cased (what per-host limits count against)."""
    return (urlsplit(url).hostname or "").lower()


def candidates(free: int) -> int:
    """How many due deliveries to look at to fill `free` senders fairly."""
    return max(free * 8, 64)


def fair_share(
    due: Iterable[Delivery], free: int, busy: Mapping[str, int], per_host: int
) -> list[Delivery]:
    """The due deliveries to send now, oldest first: at most `free` in all, and at most
    `per_host` per destination host counting those already sending (`busy`), so one slow
    client never takes every sender."""
    taken: list[Delivery] = []
    counts = dict(busy)
    for delivery in due:
        host = host_of(delivery.url)
        if len(taken) >= free or counts.get(host, 0) >= per_host:
            continue
        counts[host] = counts.get(host, 0) + 1
        taken.append(delivery)
    return taken
