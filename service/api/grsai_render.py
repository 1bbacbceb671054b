"""A relay task as the GrsAI-compatible paths show it: GrsAI's flat task object, whose result
URLs are signed links to our stored copies (GrsAI's clients download without credentials).

A task that succeeded while our copies of its files are still being made is shown `running`
(progress 99) for at most `COPY_WAIT` seconds after it finished: a GrsAI client takes the first
`succeeded` it sees as the end, and it should get the durable link, not GrsAI's URL that
expires in about two hours. After that wait (a copy that keeps failing) it is shown as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from service.api.context import Services
from service.api.routes.live import settled
from service.domain.grsai_shape import Json, task_object
from service.domain.links import file_link
from service.domain.records import Task

COPY_WAIT = 60.0  # seconds a finished task may be shown running while its files are copied
_HELD: Json = {"status": "running", "progress": 99, "results": None, "url": "", "width": 0}
_JSON: dict[str, Any] = {"ensure_ascii": False, "allow_nan": False, "separators": (",", ":")}


def request_base(scope: Scope, svc: Services) -> str:
    """The base of the links: the public URL, else the one this request came to."""
    return svc.public.base or str(Request(scope).base_url).rstrip("/")


def _stored(entry: dict[str, Any]) -> bool:
    return (entry.get("asset") or {}).get("status") == "stored"


def _upstream(task: Task) -> Callable[[int], str]:
    def link(n: int) -> str:
        entry = task.results[n]
        return str(entry.get("upstream_url") or entry.get("url") or "")

    return link


async def result_links(svc: Services, task: Task, base: str) -> Callable[[int], str]:
    """`n` -> a signed, expiring link to our copy of result `n` (RESULT_LINK_SECONDS), signed
    with the owning key's current signing secret; GrsAI's URL if the key has none."""
    if not any(_stored(entry) for entry in task.results):
        return _upstream(task)  # no copy yet: nothing to sign, no query
    now = svc.clock.now()
    secrets = await svc.storage.signing_secrets(task.api_key_id, now)
    if not secrets:
        return _upstream(task)
    expires = int(now) + svc.settings.result_link_seconds
    return lambda n: file_link(base, secrets[0], task.id, n, expires)


def copy_wait_left(task: Task, now: float) -> float:
    """Seconds the task is still shown running while its copies are made (0: shown as is)."""
    if task.status != "succeeded" or task.completed_at is None or settled(task):
        return 0.0
    return max(0.0, task.completed_at + COPY_WAIT - now)


def shown(task: Task, link: Callable[[int], str], now: float) -> Json:
    """GrsAI's task object for `task` as clients see it at `now` (see the module docstring)."""
    obj = task_object(task, link)
    if copy_wait_left(task, now) > 0:
        obj |= {**_HELD, "height": 0, "end_time": 0}
    return obj


async def grsai_task(svc: Services, task: Task, base: str) -> Json:
    """The task as GrsAI's flat task object, with signed links to our copies."""
    return shown(task, await result_links(svc, task, base), svc.clock.now())


def fingerprint(task: Task, now: float) -> str:
    """What a GrsAI client can see of the task, links aside (they differ on every render)."""
    return json.dumps(shown(task, str, now), **_JSON)


def frame(obj: Json) -> bytes:
    """One stream line as GrsAI sends it: `data: {task json}` and a blank line."""
    return b"data: " + json.dumps(obj, **_JSON).encode() + b"\n\n"


def compact(obj: Json) -> bytes:
    """A JSON answer body, compact as GrsAI's."""
    return json.dumps(obj, **_JSON).encode()
