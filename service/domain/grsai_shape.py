"""A relay task in GrsAI's own shape: the flat task object GrsAI clients read (as a stream
line, a callback body, or the `data` of a `/v1/draw/result` answer), and GrsAI's envelope.

The object carries both forms GrsAI uses for results (`results[i].url`, and `url`/`width`/
`height` at the top level for the first one), so a client written for either reads it. Its `id`
is the relay's task id: the one the client got when it submitted, and polls with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from service.domain.records import Task

Json = dict[str, Any]
NOT_FOUND_CODE = -22


def grsai_status(task: Task) -> str:
    """GrsAI's three states: a task not yet running at GrsAI is `running` to its clients."""
    return task.status if task.terminal else "running"


def result_urls(task: Task, link: Callable[[int], str]) -> list[Json]:
    """Each result as GrsAI lists it: our stored copy's URL once it exists (`link(n)`: a URL a
    plain GET fetches), else GrsAI's own (expiring) one."""
    items = []
    for n, entry in enumerate(task.results):
        stored = (entry.get("asset") or {}).get("status") == "stored"
        url = link(n) if stored else entry.get("upstream_url") or entry.get("url") or ""
        item: Json = {"url": url}
        if entry.get("width") and entry.get("height"):
            item |= {"width": entry["width"], "height": entry["height"]}
        items.append(item)
    return items


def task_object(task: Task, link: Callable[[int], str]) -> Json:
    """The task as GrsAI would show it now."""
    succeeded = task.status == "succeeded"
    results = result_urls(task, link) if succeeded else None
    first: Json = results[0] if results else {}
    return {
        "id": task.id,
        "task_id": task.id,
        "status": grsai_status(task),
        "progress": 100 if succeeded else task.progress,
        "results": results,
        "url": first.get("url", ""),
        "width": first.get("width", 0),
        "height": first.get("height", 0),
        "failure_reason": task.failure_reason or "" if task.status == "failed" else "",
        "error": task.error or "" if task.status == "failed" else "",
        "start_time": int(task.created_at),
        "end_time": int(task.completed_at) if task.completed_at is not None else 0,
        "callback_url": task.callback_url or "",
    }


def progress_object(task: Task, progress: int) -> Json:
    """The task as GrsAI showed it while it ran at `progress` (the body of a progress post)."""
    running = dataclasses.replace(task, status="running", progress=progress, completed_at=None)
    return task_object(running, lambda _n: "")


def envelope(data: Any, code: int = 0, msg: str = "success") -> Json:
    """GrsAI's answer envelope: `{"code": 0, "msg": "success", "data": ...}`."""
    return {"code": code, "msg": msg, "data": data}
