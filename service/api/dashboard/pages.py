"""The dashboard's pages and forms: sign-in and sign-out, the task list, a task's page, and its
redeliver button. Every form is checked for its Origin and (once signed in) its CSRF token."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.api.auth import api_key_from
from service.api.context import services
from service.api.dashboard import views
from service.api.dashboard.render import Templates
from service.api.dashboard.session import (
    COOKIE,
    CSRF_FIELD,
    Session,
    check_csrf,
    check_origin,
    end_session,
    session_from,
    start_session,
)
from service.api.jsonbody import read_body
from service.api.routes.tasks import MAX_MODEL, Cursor, decode_cursor
from service.domain.errors import (
    BadRequest,
    Conflict,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from service.domain.records import TASK_STATUSES, Task

PAGE = 20
FORM_MAX_BYTES = 8192
SIGN_IN = "/dashboard/sign-in"


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)  # a path: never built from the Host header


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form: 415 for another type, 413 past 8 KiB, 400 when unreadable."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("send the form as application/x-www-form-urlencoded")
    body = await read_body(request, FORM_MAX_BYTES, services(request).settings.body_timeout)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("the form is not readable") from exc
    return dict(pairs)


async def owned_task(request: Request, session: Session) -> Task:
    """The path's task if it is the session key's own; 404 otherwise (another key's too)."""
    task_id = request.path_params["task_id"]
    task = None
    if 0 < len(task_id) <= 64:
        task = await services(request).storage.task(task_id, session.key.id)
    if task is None:
        raise NotFound("no such task")
    return task


class Pages:
    """The handlers of the dashboard's pages, rendering through `templates`."""

    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    async def sign_in_form(self, request: Request) -> Response:
        """GET /dashboard/sign-in"""
        return self.templates.page("sign_in.html", message=None)

    async def sign_in(self, request: Request) -> Response:
        """POST /dashboard/sign-in: check the API key, set the session cookie, go to the list."""
        check_origin(request)
        form = await read_form(request)
        svc = services(request)
        try:
            key = await api_key_from(
                svc.storage, f"Bearer {form.get('api_key', '')}", demo_mode=svc.demo_mode
            )
        except Unauthorized as exc:
            return self.templates.page("sign_in.html", 401, message=exc.message)
        response = _see_other("/dashboard")
        await start_session(svc, key, response)
        return response

    async def sign_out(self, request: Request) -> Response:
        """POST /dashboard/sign-out: clear the cookie (with this session's CSRF token)."""
        check_origin(request)
        session = await session_from(request)
        check_csrf(session, await read_form(request))
        response = _see_other(SIGN_IN)
        end_session(services(request), response)
        return response

    async def task_list(self, request: Request) -> Response:
        """GET /dashboard?status=&model=&cursor=: the key's tasks, newest first, a page at a
        time, with filters; the unsettled ones update live."""
        if COOKIE not in request.cookies:
            return _see_other(SIGN_IN)
        session = await session_from(request)
        svc = services(request)
        status, model, cursor = _filters(request)
        before = None
        if cursor is not None:
            status, model, before = cursor.status, cursor.model, cursor.seq
        tasks = await svc.storage.list_tasks(
            session.key.id, status=status, model=model, limit=PAGE + 1, before_seq=before
        )
        page = tasks[:PAGE]
        older = None
        if len(tasks) > PAGE and page[-1].seq:
            query = {"cursor": Cursor(page[-1].seq, status, model, PAGE).encode()}
            older = "/dashboard?" + urlencode(query)
        now = svc.clock.now()
        rows = [views.row(task, now) for task in page]
        models = sorted({*svc.settings.catalog().models, *([model] if model else [])})
        return self.templates.page(
            "list.html",
            session=session,
            csrf_field=CSRF_FIELD,
            rows=rows,
            statuses=TASK_STATUSES,
            models=models,
            status=status or "",
            model=model or "",
            older=older,
            paged=before is not None,
            live=",".join(r.id for r in rows if not r.settled),
        )

    async def task_page(self, request: Request) -> Response:
        """GET /dashboard/tasks/{id}: results, input, metadata, timeline, copies, deliveries."""
        session = await session_from(request)
        task = await owned_task(request, session)
        storage = services(request).storage
        return self.templates.page(
            "task.html",
            session=session,
            csrf_field=CSRF_FIELD,
            task=task,
            prompt=views.prompt_of(task),
            media=views.media(task),
            input=views.pretty(task.input),
            metadata=None if task.metadata is None else views.pretty(task.metadata),
            timeline=views.timeline(await storage.events(task.id)),
            copies=views.copies(await storage.assets_of(task.id)),
            deliveries=views.deliveries(await storage.deliveries_of(task.id)),
            settled=views.live(task)["settled"],
            redelivered=request.query_params.get("redelivered") == "1",
        )

    async def redeliver(self, request: Request) -> Response:
        """POST /dashboard/tasks/{id}/redeliver: queue the final event again (same event id)."""
        check_origin(request)
        session = await session_from(request)
        check_csrf(session, await read_form(request))
        task = await owned_task(request, session)
        svc = services(request)
        if await svc.storage.redeliver(task.id, svc.clock.now()) is None:
            raise Conflict(
                "this task has no final event to redeliver (not finished, or no callback_url)",
                code="nothing_to_redeliver",
            )
        svc.deliverer.kick()
        return _see_other(f"/dashboard/tasks/{task.id}?redelivered=1")


def _filters(request: Request) -> tuple[str | None, str | None, Cursor | None]:
    """The list's filters (empty = any) and cursor; 422 for an unknown status or a bad model,
    400 `invalid_cursor` for a cursor the dashboard did not make."""
    query = request.query_params
    status = query.get("status") or None
    if status is not None and status not in TASK_STATUSES:
        raise ValidationFailed(
            f"status must be one of {', '.join(TASK_STATUSES)}",
            fields=[{"field": "status", "message": "unknown status"}],
        )
    model = query.get("model") or None
    if model is not None and len(model) > MAX_MODEL:
        raise ValidationFailed(
            f"model must be 1-{MAX_MODEL} characters",
            fields=[{"field": "model", "message": "bad length"}],
        )
    cursor = None
    if raw := query.get("cursor"):
        cursor = decode_cursor(raw)
        if (status or cursor.status, model or cursor.model) != (cursor.status, cursor.model):
            raise BadRequest("this cursor belongs to other filters", code="invalid_cursor")
    return status, model, cursor
