"""Stream mode of the GrsAI-compatible submit paths (no `webHook`): the answer is
`text/event-stream`, one `data: {task object}` line per change GrsAI's client can see, ending
after the final one, exactly as GrsAI streams (no `event:` lines, no `[DONE]`, no comments).

The lines are fed by the live-status hub (`TaskWatch`): the task is read once per wake, never
in a loop. The final line waits (at most `grsai_render.COPY_WAIT` seconds) for our copies of
the result files, so that it carries links to them rather than GrsAI's expiring URLs; with
`shutProgress: true` it is the only line. The task is an ordinary relay task: a client that
goes away does not stop it. Each open stream counts against STREAMS_PER_KEY, and the relay's
shutdown ends it (with the task's current state if nothing was sent yet, so the client holds
its id and can poll `/v1/draw/result`).
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from service.api.context import Services, scope_services
from service.api.grsai_render import (
    copy_wait_left,
    fingerprint,
    frame,
    grsai_task,
    request_base,
)
from service.api.routes.live import ClientGone
from service.domain.errors import RateLimited, RelayError
from service.domain.grsai_request import GrsaiSubmit
from service.domain.records import ApiKey, Task
from service.jobs.watch import Watcher

IDLE_WAIT = 3600.0  # a wake without a change is harmless: re-check this often at most
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each line on at once
]


async def stream_answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    key: ApiKey,
    wanted: GrsaiSubmit,
    idempotency_key: str | None,
) -> None:
    """Submit the task, then stream its states until it is final (or the client goes)."""
    svc = scope_services(scope)
    if not svc.streams.take(key.id):  # before the task exists: refused like any submit
        raise RateLimited(
            f"this API key has {svc.streams.limit} streams open (STREAMS_PER_KEY);"
            ' close one first, or submit with webHook "-1" and poll',
            code="too_many_streams",
            limit=svc.streams.limit,
            retry_after=1,
        )
    try:
        accepted = await svc.submitter.submit(key, wanted.body, idempotency_key)
        task_id, base = accepted.task.id, request_base(scope, svc)
        with svc.watch.watch(task_id) as watcher:  # before the read: no change slips between
            task = await svc.storage.task(task_id, key.id)
            assert task is not None  # just made (or replayed) for this key
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            gone = ClientGone(receive, watcher)
            try:
                await _lines(svc, task, base, wanted.shut_progress, watcher, gone, send)
            finally:
                gone.stop()
        if not gone.gone:
            await send({"type": "http.response.body", "body": b""})
    finally:
        svc.streams.give_back(key.id)


async def _lines(
    svc: Services,
    task: Task,
    base: str,
    shut_progress: bool,
    watcher: Watcher,
    gone: ClientGone,
    send: Send,
) -> None:
    sent: str | None = None

    async def line(current: Task) -> None:
        nonlocal sent
        obj = await grsai_task(svc, current, base)
        await send({"type": "http.response.body", "body": frame(obj), "more_body": True})
        sent = fingerprint(current, svc.clock.now())

    while True:
        held = copy_wait_left(task, svc.clock.now())  # final, but the copies are being made
        final = task.terminal and held == 0
        if (final or not shut_progress) and fingerprint(task, svc.clock.now()) != sent:
            await line(task)
        if final or gone.gone:
            return
        changed = await watcher.wait(held or IDLE_WAIT)
        if gone.gone:
            return
        if watcher.closed:  # the relay is stopping
            if sent is None:
                await line(task)
            return
        if changed:
            try:
                found = await svc.storage.task(task.id, task.api_key_id)
            except RelayError:  # the database is away: end here; the client can poll
                return
            if found is None:  # purged meanwhile
                return
            task = found
