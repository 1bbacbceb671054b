"""What the dashboard's pages show of a task, its events, copies and deliveries (plain values
the templates print; no HTML is built here: the templates escape everything)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from service.api.routes.live import settled
from service.domain.records import Asset, Attempt, Delivery, Task
from service.storage import Event

PROMPT_CHARS = 120
BODY_CHARS = 600
BASE = "/dashboard"


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def prompt_of(task: Task) -> str:
    """The prompt a user typed (any type shows as its JSON)."""
    prompt = task.input.get("prompt")
    if prompt is None:
        return ""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)


def age(seconds: float) -> str:
    """How long ago, as a person says it (`42 s`, `5 min`, `3 h`, `2 d`)."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def kind_of(entry: dict[str, Any]) -> str | None:
    """`image` or `video` for a stored copy the dashboard can show, else None."""
    if (entry.get("asset") or {}).get("status") != "stored":
        return None
    content_type = str(entry.get("content_type") or "")
    for kind in ("image", "video"):
        if content_type.startswith(kind + "/"):
            return kind
    return None


def file_url(task_id: str, n: int) -> str:
    """Where the dashboard serves stored file `n` of a task."""
    return f"{BASE}/tasks/{task_id}/files/{n}"


def thumb_url(task_id: str, n: int) -> str:
    """Where the dashboard serves the thumbnail (or poster) of stored file `n`."""
    return f"{BASE}/tasks/{task_id}/thumbs/{n}"


def first_thumb(task: Task) -> str | None:
    """The thumbnail of the task's first stored image or video, if any."""
    for n, entry in enumerate(task.results):
        if kind_of(entry) is not None:
            return thumb_url(task.id, n)
    return None


def live(task: Task) -> dict[str, Any]:
    """What a live update tells the list about a task (the event stream's `data`)."""
    return {
        "id": task.id,
        "status": task.status,
        "progress": task.progress,
        "thumb": first_thumb(task),
        "settled": settled(task),
    }


@dataclass(frozen=True, slots=True)
class Row:
    """One task in the list."""

    id: str
    status: str
    progress: int
    model: str
    prompt: str
    age: str
    created_at: float
    thumb: str | None
    settled: bool


def row(task: Task, now: float) -> Row:
    """The list's row of a task at `now`."""
    return Row(
        task.id,
        task.status,
        task.progress,
        task.model,
        shorten(prompt_of(task), PROMPT_CHARS),
        age(now - task.created_at),
        task.created_at,
        first_thumb(task),
        settled(task),
    )


@dataclass(frozen=True, slots=True)
class Media:
    """One result of the task page: shown when stored, else its state."""

    n: int
    kind: str | None
    url: str | None
    thumb: str | None
    state: str
    upstream_url: str
    detail: str


def media(task: Task) -> list[Media]:
    """The task's results as the page shows them."""
    found = []
    for n, entry in enumerate(task.results):
        kind = kind_of(entry)
        asset = entry.get("asset") or {}
        size = entry.get("width"), entry.get("height")
        detail = " · ".join(
            part
            for part in (
                str(entry.get("content_type") or ""),
                f"{size[0]}x{size[1]}" if all(size) else "",
                f"{entry['bytes']} bytes" if entry.get("bytes") else "",
            )
            if part
        )
        found.append(
            Media(
                n,
                kind,
                file_url(task.id, n) if kind else None,
                thumb_url(task.id, n) if kind else None,
                str(asset.get("status") or "not copied"),
                str(entry.get("upstream_url") or ""),
                detail,
            )
        )
    return found


def pretty(value: Any) -> str:
    """JSON as a person reads it (escaped by the template like any text)."""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


@dataclass(frozen=True, slots=True)
class Moment:
    """One event of the timeline: a GrsAI callback, a poll, the submit, a local decision."""

    at: float
    source: str
    outcome: str
    detail: str
    body: str


def timeline(events: list[Event]) -> list[Moment]:
    """The task's events, oldest first, each body shortened."""
    return [
        Moment(
            e.received_at,
            e.source,
            e.outcome or "",
            e.detail or "",
            shorten(e.body.decode("utf-8", "replace"), BODY_CHARS),
        )
        for e in events
    ]


def copies(assets: list[Asset]) -> list[dict[str, Any]]:
    """The task's copy jobs as table rows."""
    return [
        {
            "n": a.n,
            "status": a.status,
            "attempts": a.attempts,
            "content_type": a.content_type or "",
            "bytes": a.bytes,
            "size": f"{a.width}x{a.height}" if a.width and a.height else "",
            "sha256": (a.sha256 or "")[:16],
            "error": a.error or "",
            "stored_at": a.stored_at,
        }
        for a in assets
    ]


def deliveries(found: list[tuple[Delivery, list[Attempt]]]) -> list[dict[str, Any]]:
    """The task's client deliveries, each with its attempts, as the page shows them."""
    return [
        {
            "id": d.id,
            "event_type": d.event_type,
            "url": d.url,
            "status": d.status,
            "attempts": d.attempts,
            "next_attempt_at": d.next_attempt_at if d.status == "pending" else None,
            "last_error": d.last_error or "",
            "log": [
                {
                    "at": a.attempted_at,
                    "status_code": a.status_code,
                    "latency_ms": None if a.latency_ms is None else round(a.latency_ms, 1),
                    "error": a.error or "",
                }
                for a in attempts
            ],
        }
        for d, attempts in found
    ]
