"""GET /dashboard/events?ids=a,b,...: live updates of the tasks a dashboard page shows, as
Server-Sent Events, authenticated by the session cookie (an EventSource cannot send a Bearer
header).

Fed by the live-status hub (`jobs.watch`) like `GET /v1/tasks/{id}/events`: one watcher on all
the page's tasks, woken by their committed changes, reading only the tasks that changed. Each
event's `data` is `views.live(task)`. The stream ends once every task is settled; an
EventSource that reconnects then gets 204, which stops it. Streams count against the key's
`STREAMS_PER_KEY`.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from service.api.context import Services, services
from service.api.dashboard.render import Hardened, Templates
from service.api.dashboard.session import SECURITY_HEADERS, session_from
from service.api.dashboard.views import live
from service.domain.errors import NotFound, RateLimited, RelayError, ValidationFailed
from service.domain.records import Task
from service.jobs.watch import WatchGroup

MAX_IDS = 50
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
    *((name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()),
]


def task_ids(request: Request) -> list[str]:
    """The `ids` query parameter: 1 to 50 task ids, comma-separated; 422 otherwise."""
    ids = [i for i in (request.query_params.get("ids") or "").split(",") if i]
    if not 1 <= len(ids) <= MAX_IDS or not all(_ID.fullmatch(i) for i in ids):
        raise ValidationFailed(
            f"ids must name 1 to {MAX_IDS} task ids, comma-separated",
            fields=[{"field": "ids", "message": "bad task id list"}],
        )
    return list(dict.fromkeys(ids))


def _event(view: dict[str, Any]) -> bytes:
    data = json.dumps(view, ensure_ascii=False, separators=(",", ":"))
    return f"event: task\ndata: {data}\n\n".encode()


class _Gone:
    """Watches `receive` for the client going away, and wakes `group` then."""

    def __init__(self, receive: Receive, group: WatchGroup) -> None:
        self.gone = False
        self._receive, self._group = receive, group
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self._group.wake()

    def stop(self) -> None:
        """Stop watching (the answer is complete)."""
        self._task.cancel()


class DashboardEvents:
    """The ASGI endpoint; errors before the stream starts are HTML error pages."""

    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the session and ids, take a stream slot, then stream."""
        request = Request(scope, receive)
        svc = services(request)
        try:
            session = await session_from(request)
            ids = task_ids(request)
            if not svc.streams.take(session.key.id):
                raise RateLimited(
                    f"this API key has {svc.streams.limit} event streams open (STREAMS_PER_KEY)",
                    code="too_many_streams",
                    limit=svc.streams.limit,
                    retry_after=1,
                )
        except RelayError as exc:
            await Hardened(self.templates.error(request, exc))(scope, receive, send)
            return
        try:
            await self._stream(request, svc, session.key.id, ids, send)
        except RelayError as exc:  # before the stream started: no task of this key
            await Hardened(self.templates.error(request, exc))(scope, receive, send)
        finally:
            svc.streams.give_back(session.key.id)

    async def _read(self, svc: Services, key_id: str, task_id: str) -> Task:
        task = await svc.storage.task(task_id, key_id)
        if task is None:
            raise NotFound("no such task")
        return task

    async def _stream(
        self, request: Request, svc: Services, key_id: str, ids: list[str], send: Send
    ) -> None:
        with svc.watch.watch_all(ids) as group:  # before the reads: no change slips between
            views = {i: live(await self._read(svc, key_id, i)) for i in ids}
            if all(v["settled"] for v in views.values()):
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            first = b"".join(_event(v) for v in views.values())
            await send({"type": "http.response.body", "body": first, "more_body": True})
            gone = _Gone(request.receive, group)
            try:
                await self._follow(svc, key_id, views, group, gone, send)
            finally:
                gone.stop()
        if not gone.gone:
            await send({"type": "http.response.body", "body": b""})

    async def _follow(
        self,
        svc: Services,
        key_id: str,
        views: dict[str, dict[str, Any]],
        group: WatchGroup,
        gone: _Gone,
        send: Send,
    ) -> None:
        """Send each changed task until all settle, the client goes or the server stops."""
        while not all(v["settled"] for v in views.values()):
            if not await group.wait(svc.settings.stream_heartbeat):
                await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                continue
            if group.closed or gone.gone:
                return
            changed, group.woken = group.woken & views.keys(), set()
            for task_id in sorted(changed):
                try:
                    task = await svc.storage.task(task_id, key_id)
                except RelayError:  # the database is away: the page reconnects later
                    return
                if task is None:  # purged meanwhile
                    views[task_id] = {**views[task_id], "settled": True}
                    continue
                if (view := live(task)) != views[task_id]:
                    views[task_id] = view
                    body = _event(view)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
