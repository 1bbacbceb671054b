"""The task state machine: pure functions deciding what an observation does to a task.

States move forward only: pending -> running -> succeeded | failed. Progress never goes down,
a terminal state is final, and anything that would move backwards is recorded but changes
nothing (`duplicate` when it repeats what we know, `stale` when it is older news).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.domain.observation import Observation
from service.domain.outbox import OutboxEvent, final_event, progress_event
from service.domain.records import TERMINAL, EventOutcome, Task
from service.domain.results import result_entries


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one observation: its outcome, the column changes, and what to queue
    with them (a backend stores all of it in one transaction and decides nothing itself)."""

    outcome: EventOutcome
    changes: dict[str, Any] = field(default_factory=dict)
    detail: str | None = None
    copies: tuple[str, ...] = ()  # result URLs to copy to our storage: copy jobs 0..n-1
    final_event: OutboxEvent | None = None  # the client's final event, due now
    progress_event: OutboxEvent | None = None  # a GrsAI-shaped client's progress post, due now


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
        event = final_event(
            task.id,
            task.api_key_id,
            obs.status,
            task.callback_url,
            now,
            copies_pending=bool(copies),
        )
        return Decision("applied", changes, copies=copies, final_event=event)
    progress = obs.progress if obs.progress is not None else task.progress
    if task.status == "pending":
        progress = max(progress, task.progress)
        return Decision(
            "applied",
            {
                **bind,
                "status": "running",
                "progress": progress,
                "updated_at": now,
                "last_event_at": now,
            },
            progress_event=_progress_event(task, progress, now),
        )
    if progress > task.progress:
        return Decision(
            "applied",
            {**bind, "progress": progress, "updated_at": now, "last_event_at": now},
            progress_event=_progress_event(task, progress, now),
        )
    if progress == task.progress:
        return Decision("duplicate", {"last_event_at": now}, detail="no new progress")
    return Decision("stale", detail=f"progress {progress} is behind {task.progress}")


def _progress_event(task: Task, progress: int, now: float) -> OutboxEvent | None:
    return progress_event(
        task.id, task.api_key_id, task.callback_format, task.callback_url, progress, now
    )


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
        final_event=final_event(
            task.id, task.api_key_id, "failed", task.callback_url, now, copies_pending=False
        ),
    )


def apply(task: Task, decision: Decision) -> Task:
    """Return `task` with the decision's changes applied in memory."""
    for name, value in decision.changes.items():
        setattr(task, name, value)
    return task


def wakes_outbox(decision: Decision) -> bool:
    """The decision queued work the copier or the deliverer should start now: the task became
    final, or a GrsAI-shaped client has a progress post due."""
    return decision.changes.get("status") in TERMINAL or decision.progress_event is not None
