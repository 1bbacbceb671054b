"""The dashboard at /dashboard: server-rendered pages (Jinja2) of an API key's tasks, with
thumbnails, live updates and the task's whole story. HTML for people, not API: it is not in
the OpenAPI document (`tests/unit/test_openapi.py` names its routes as undocumented by design).

Signed in with an API key (`session`), each page, file and stream reads the session cookie;
every form carries its CSRF token and is checked for its Origin; every answer carries a strict
Content-Security-Policy, and the CSS and script are served from `static/` (no CDN).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from service.api.dashboard import media
from service.api.dashboard.live import DashboardEvents
from service.api.dashboard.pages import Pages
from service.api.dashboard.render import HERE, Endpoint, Handler, Hardened, Templates

PREFIX = "/dashboard"


def routes() -> list[BaseRoute]:
    """The dashboard's routes, with their own templates (built once per app)."""
    templates = Templates()
    pages = Pages(templates)

    def route(path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(PREFIX + path, Endpoint(templates, handler), methods=methods)

    return [
        route("", pages.task_list, ["GET"]),
        route("/sign-in", pages.sign_in_form, ["GET"]),
        route("/sign-in", pages.sign_in, ["POST"]),
        route("/sign-out", pages.sign_out, ["POST"]),
        route("/tasks/{task_id}", pages.task_page, ["GET"]),
        route("/tasks/{task_id}/redeliver", pages.redeliver, ["POST"]),
        route("/tasks/{task_id}/files/{n}", media.result_file, ["GET"]),
        route("/tasks/{task_id}/thumbs/{n}", media.thumbnail, ["GET"]),
        Route(PREFIX + "/events", DashboardEvents(templates), methods=["GET"]),
        Mount(PREFIX + "/static", Hardened(StaticFiles(directory=HERE / "static"))),
    ]
