"""The simulator's in-memory records: tasks, their result files, callbacks sent, counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from service.simulator.catalog import ModelSpec
from service.simulator.faults import Faults

JSONObject = dict[str, Any]
Mode = Literal["stream", "callback", "poll"]
Status = Literal["running", "succeeded", "failed", "violation"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "violation"})


@dataclass(frozen=True)
class ResultFile:
    """One result file the simulator serves under `/files/{task id}/{index}.{ext}`."""

    url: str
    width: int
    height: int
    pid: str


@dataclass
class CallbackRecord:
    """One callback POST as it happened."""

    body: JSONObject
    raw: bytes  # the exact request body sent (UTF-8 JSON)
    time: float
    attempt: int
    status: int | None = None  # the receiver's HTTP status; None when it could not be reached
    error: str | None = None
    seconds: float | None = None  # how long the receiver took to answer (or to fail)

    def to_json(self) -> JSONObject:
        """A JSON-ready view for the admin endpoints."""
        return {
            "body": self.body,
            "raw": self.raw.decode(),
            "time": self.time,
            "attempt": self.attempt,
            "status": self.status,
            "error": self.error,
            "seconds": self.seconds,
        }


@dataclass
class SimTask:
    """One simulated generation task and everything that happened to it."""

    id: str
    model: ModelSpec
    mode: Mode
    webhook: str | None
    shut_progress: bool
    faults: Faults
    submitted_at: float
    files: tuple[ResultFile, ...]
    status: Status = "running"
    progress: int = 0
    ended_at: float | None = None
    failure_reason: str = ""
    error: str = ""
    callbacks: list[CallbackRecord] = field(default_factory=list)
    polls: int = 0  # poll requests for this id, broken ones included
    poll_faults: list[str] = field(default_factory=list)  # the broken answers, in order
    submit_fault: str | None = None  # how the submit answer that created the task was broken
    # Snapshots for a stream response and for the callback sender; None ends each.
    stream: asyncio.Queue[JSONObject | None] | None = None
    streamed: int = 0  # frames sent down the stream
    outbox: asyncio.Queue[JSONObject | None] | None = None
    hurry: asyncio.Event = field(default_factory=asyncio.Event)
    downloads: dict[int, int] = field(default_factory=dict)  # result index -> fetches so far

    @property
    def done(self) -> bool:
        """Whether the task reached a terminal status."""
        return self.status in TERMINAL


@dataclass
class Stats:
    """Counters served at `/_sim/stats`."""

    submits: int = 0
    tasks: int = 0
    callbacks_sent: int = 0
    polls: int = 0
    poll_faults: int = 0  # polls answered by a broken answer (slow ones included)
    submit_faults: int = 0  # submits answered by a broken answer

    def to_json(self) -> JSONObject:
        """A JSON-ready view."""
        return {
            "submits": self.submits,
            "tasks": self.tasks,
            "callbacks_sent": self.callbacks_sent,
            "polls": self.polls,
            "poll_faults": self.poll_faults,
            "submit_faults": self.submit_faults,
        }
