"""The task state machine: pure functions deciding what an observation does to a task.

States move forward only: pending -> running -> succeeded | failed. Progress never goes down,
a terminal state is final, and anything that would move backwards is recorded but changes
nothing (`duplicate` when it repeats what we know, `stale` when it is older news).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.domain.observation import Observation
from service.domain.records import EventOutcome, Task


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one observation: its outcome and the column changes to apply."""

    outcome: EventOutcome
    changes: dict[str, Any] = field(default_factory=dict)
    detail: str | None = None
    copies: tuple[str, ...] = ()  # result URLs to copy to our storage, queued atomically


def result_entries(obs: Observation, copy_results: bool) -> list[dict[str, Any]]:
    """The stored `results` of a task that just succeeded.

    With copying, `url` stays null until our copy is stored (it is never shown as stored
    before it is); without, `url` is GrsAI's own (expiring) URL.
    """
    return [
        {
            "url": None if copy_results else r.url,
            "upstream_url": r.url,
            "content_type": None,
            "bytes": None,
            "sha256": None,
            "width": r.width,
            "height": r.height,
            "stored_at": None,
            "asset": {"status": "pending" if copy_results else "not_copied", "error": None},
        }
        for r in obs.results
    ]


def decide(task: Task, obs: Observation, now: float, *, copy_results: bool = False) -> Decision:
    """Decide how a (verified, if terminal) observation changes `task`.

    With `copy_results`, a success also queues a copy of every result file.
    """
    if task.upstream_id is not None and obs.upstream_id != task.upstream_id:
        return Decision("rejected", detail="id does not match this task's upstream id")
    bind = (
        {"upstream_id": obs.upstream_id, "submit_state": "submitted"}
        if task.upstream_id is None
        else {}
    )
    if task.terminal:
        same = obs.terminal and obs.status == task.status
        return Decision("duplicate" if same else "stale", detail=f"task is already {task.status}")
    if obs.terminal:
        changes: dict[str, Any] = {
            **bind,
            "status": obs.status,
            "progress": 100 if obs.status == "succeeded" else max(task.progress, obs.progress or 0),
            "results": result_entries(obs, copy_results) if obs.status == "succeeded" else [],
            "failure_reason": obs.failure_reason if obs.status == "failed" else None,
            "error": obs.error,
            "completed_at": now,
            "updated_at": now,
            "last_event_at": now,
            "next_poll_at": None,
        }
        copies = (
            tuple(r.url for r in obs.results) if copy_results and obs.status == "succeeded" else ()
        )
        return Decision("applied", changes, copies=copies)
    progress = obs.progress if obs.progress is not None else task.progress
    if task.status == "pending":
        return Decision(
            "applied",
            {
                **bind,
                "status": "running",
                "progress": max(progress, task.progress),
                "updated_at": now,
                "last_event_at": now,
            },
        )
    if progress > task.progress:
        return Decision(
            "applied", {**bind, "progress": progress, "updated_at": now, "last_event_at": now}
        )
    if progress == task.progress:
        return Decision("duplicate", {"last_event_at": now}, detail="no new progress")
    return Decision("stale", detail=f"progress {progress} is behind {task.progress}")


def fail_locally(task: Task, reason: str, error: str, now: float) -> Decision:
    """Fail a task for a reason found on our side (lost, timeout, submit rejected)."""
    if task.terminal:
        return Decision("stale", detail=f"task is already {task.status}")
    submit = {"submit_state": "failed"} if task.submit_state == "submitting" else {}
    return Decision(
        "applied",
        {
            **submit,
            "status": "failed",
            "failure_reason": reason,
            "error": error,
            "completed_at": now,
            "updated_at": now,
            "next_poll_at": None,
        },
    )


def apply(task: Task, decision: Decision) -> Task:
    """Return `task` with the decision's changes applied in memory."""
    for name, value in decision.changes.items():
        setattr(task, name, value)
    return task
