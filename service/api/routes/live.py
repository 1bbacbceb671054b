"""Live status: `GET /v1/tasks/{id}?wait=N` (a long-poll) and `GET /v1/tasks/{id}/events`
(a Server-Sent Events stream), both woken by the task's change itself (`jobs.watch`).

A task's state is named by its fingerprint, the `ETag` of its JSON (the SSE event `id`): the
same state gives the same fingerprint on every replica. A long-poll answers when the task's
state differs from the one the client holds (`If-None-Match`, else the state when the request
arrived), when the task is settled (final, no result file still being copied: it will not
change again), when the server stops, or at the timeout with the unchanged task. A stream sends
the current state (unless `Last-Event-ID` says the client has it), then each new state, until
the task is settled; a settled task whose state the client has gets 204 (an EventSource stops
reconnecting on 204).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.api.asgi import header
from service.api.auth import api_key_from
from service.api.context import Services, scope_services
from service.domain.errors import NotFound, RateLimited, RelayError, ValidationFailed
from service.domain.records import ApiKey, Task
from service.jobs.watch import Watcher

MAX_WAIT = 60.0
_WAIT = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?")
_JSON: dict[str, Any] = {"ensure_ascii": False, "allow_nan": False, "separators": (",", ":")}


@dataclass(frozen=True, slots=True)
class _RouteLabel:
    """What the request-context middleware reads of a matched route: its path."""

    path: str


LONG_POLL_ROUTE = _RouteLabel("/v1/tasks/{task_id}?wait")
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]


def encode_task(task: Task, base_url: str) -> tuple[bytes, str]:
    """The task's JSON body and its fingerprint (the ETag value, without quotes)."""
    body = json.dumps(task.to_json(base_url), **_JSON).encode("utf-8")
    return body, hashlib.blake2b(body, digest_size=12).hexdigest()


def settled(task: Task) -> bool:
    """Final, and no result file still being copied: the task's state will not change again."""
    if not task.terminal:
        return False
    return not any((r.get("asset") or {}).get("status") == "pending" for r in task.results)


def wait_seconds(query_string: bytes) -> float | None:
    """The `wait` query parameter: None when absent; 422 unless 0 < wait <= 60 seconds."""
    raw = next(
        (
            v
            for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
            if k == "wait"
        ),
        None,
    )
    if raw is None:
        return None
    if not (_WAIT.fullmatch(raw) and 0 < float(raw) <= MAX_WAIT):
        raise ValidationFailed(
            "wait must be a number of seconds above 0 and at most 60 (e.g. wait=30)",
            fields=[{"field": "wait", "message": "must be above 0 and at most 60 seconds"}],
        )
    return float(raw)


def _etags(value: bytes | None) -> set[str]:
    """The entity tags of an `If-None-Match` header, without quotes or `W/`."""
    if value is None:
        return set()
    tags = (t.strip().removeprefix("W/").strip('"') for t in value.decode("latin-1").split(","))
    return {t for t in tags if t}


class ClientGone:
    """Watches a request's `receive` for the client going away, and wakes `watcher` then."""

    def __init__(self, receive: Receive, watcher: Watcher) -> None:
        self.gone = False
        self._receive = receive
        self._watcher = watcher
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self._watcher.wake()

    def stop(self) -> None:
        """Stop watching (the answer is complete)."""
        self._task.cancel()


async def _task(svc: Services, key_id: str, task_id: str) -> Task:
    task = await svc.storage.task(task_id, key_id) if len(task_id) <= 64 else None
    if task is None:
        raise NotFound("no such task")
    return task


async def long_poll(
    scope: Scope, receive: Receive, send: Send, key: ApiKey, seconds: float
) -> None:
    """`GET /v1/tasks/{id}?wait=N` for `key`: the task once it differs from the client's copy."""
    # metrics and request logs count long-polls apart from lookups: their duration is the wait
    scope["route"] = LONG_POLL_ROUTE
    svc = scope_services(scope)
    task_id = scope["path_params"]["task_id"]
    base_url = svc.public.base
    held = _etags(header(scope, b"if-none-match"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    with svc.watch.watch(task_id) as watcher:  # before the read: no change slips between
        body, etag = encode_task(task := await _task(svc, key.id, task_id), base_url)
        if held and etag not in held:
            held = set()  # the client's copy is stale: answer now
        elif not held:
            held = {etag}  # wait for a change from the state the request found
        gone = ClientGone(receive, watcher)
        try:
            while etag in held and not settled(task) and not watcher.closed:
                if not await watcher.wait(deadline - loop.time()) or gone.gone:
                    break
                try:
                    body, etag = encode_task(task := await _task(svc, key.id, task_id), base_url)
                except NotFound:  # purged meanwhile: answer with what it was
                    break
        finally:
            gone.stop()
        if gone.gone:
            return
    await send_task(send, body, etag)


async def send_task(send: Send, body: bytes, etag: str) -> None:
    """Answer 200 with the task's JSON and its `ETag`."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"etag", b'"%s"' % etag.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _event(body: bytes, etag: str) -> bytes:
    return b"event: task\nid: %s\ndata: %s\n\n" % (etag.encode(), body)


class TaskEvents:
    """GET /v1/tasks/{id}/events: the task's states as Server-Sent Events until it settles."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key, the task and the key's open streams, then stream."""
        svc = scope_services(scope)
        authorization = (header(scope, b"authorization") or b"").decode("latin-1")
        key = await api_key_from(svc.storage, authorization, demo_mode=svc.demo_mode)
        if not svc.streams.take(key.id):
            raise RateLimited(
                f"this API key has {svc.streams.limit} event streams open (STREAMS_PER_KEY);"
                " close one first",
                code="too_many_streams",
                limit=svc.streams.limit,
                retry_after=1,
            )
        try:
            await self._stream(svc, key.id, scope, receive, send)
        finally:
            svc.streams.give_back(key.id)

    async def _stream(
        self, svc: Services, key_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        task_id = scope["path_params"]["task_id"]
        base_url = svc.public.base
        sent = (header(scope, b"last-event-id") or b"").decode("latin-1").strip()
        with svc.watch.watch(task_id) as watcher:  # before the read: no change slips between
            task = await _task(svc, key_id, task_id)
            etag = encode_task(task, base_url)[1]
            if settled(task) and etag == sent:
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            gone = ClientGone(receive, watcher)
            try:
                await self._events(svc, key_id, task, sent, watcher, gone, send)
            finally:
                gone.stop()
        if not gone.gone:
            await send({"type": "http.response.body", "body": b""})

    async def _events(
        self,
        svc: Services,
        key_id: str,
        task: Task,
        sent: str,
        watcher: Watcher,
        gone: ClientGone,
        send: Send,
    ) -> None:
        """Send each new state, and a heartbeat comment when idle, until the task settles,
        the client goes or the server stops."""
        base_url = svc.public.base
        while True:
            body, etag = encode_task(task, base_url)
            if etag != sent:
                await send(
                    {"type": "http.response.body", "body": _event(body, etag), "more_body": True}
                )
                sent = etag
            if settled(task) or watcher.closed or gone.gone:
                return
            if not await watcher.wait(svc.settings.stream_heartbeat):
                await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                continue
            if watcher.closed or gone.gone:
                return
            try:
                task = await _task(svc, key_id, watcher.task_id)
            except RelayError:  # purged, or the database is away: the client reconnects later
                return


routes = [Route("/v1/tasks/{task_id}/events", TaskEvents(), methods=["GET"])]
