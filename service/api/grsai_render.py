"""A relay task as the GrsAI-compatible paths show it: GrsAI's flat task object, whose result
URLs are signed links to our stored copies (GrsAI's clients download without credentials)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from service.api.context import Services
from service.domain.grsai_shape import Json, task_object
from service.domain.links import file_link
from service.domain.records import Task

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


async def grsai_task(svc: Services, task: Task, base: str) -> Json:
    """The task as GrsAI's flat task object, with signed links to our copies."""
    return task_object(task, await result_links(svc, task, base))


def fingerprint(task: Task) -> str:
    """What a GrsAI client can see of the task, links aside (they differ on every render)."""
    return json.dumps(task_object(task, str), **_JSON)


def frame(obj: Json) -> bytes:
    """One stream line as GrsAI sends it: `data: {task json}` and a blank line."""
    return b"data: " + json.dumps(obj, **_JSON).encode() + b"\n\n"


def compact(obj: Json) -> bytes:
    """A JSON answer body, compact as GrsAI's."""
    return json.dumps(obj, **_JSON).encode()
