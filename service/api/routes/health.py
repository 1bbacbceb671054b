"""Liveness and readiness."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.api.context import services
from service.domain.errors import RelayError
from service.domain.modes import default_mode


async def healthz(request: Request) -> JSONResponse:
    """The process is alive and serving."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Each dependency by name: the database answers, settings usable, the workers run, the file
    store answers, and each outbound HTTP client can get a connection (a jammed or exhausted
    pool fails by name). Warnings (the public URL's self-check failed, callbacks stopped
    arriving) leave the relay ready: its tasks still finish by polling."""
    svc = services(request)
    checks: dict[str, dict[str, str]] = {}
    try:
        await svc.storage.ping()
        checks["database"] = {"status": "ok"}
    except RelayError as exc:
        checks["database"] = {"status": "failing", "error": exc.message}
    settings = svc.settings
    checks["settings"] = {
        "status": "ok",
        "mode": default_mode(settings.task_mode, svc.public.url),
    }
    if settings.task_mode == "callback" and not settings.public_base_url:
        checks["settings"] |= {
            "status": "failing",
            "error": "TASK_MODE=callback needs PUBLIC_BASE_URL",
        }
    checks["poller"] = {"status": "ok" if svc.poller.alive else "failing"}
    if svc.settings.mirror_results:
        checks["copier"] = {"status": "ok" if svc.copier.alive else "failing"}
    checks["deliverer"] = {"status": "ok" if svc.deliverer.alive else "failing"}
    checks["asset_store"] = {"status": "ok"}  # ASSET_STORE (or ASSET_DIR), cached a few seconds
    if (problem := await svc.assets.problem()) is not None:
        checks["asset_store"] = {"status": "failing", "error": problem}
    checks["public_url"] = svc.public_check.report()
    checks["callbacks"] = svc.callback_health.report()
    for client in svc.clients:
        checks[f"http_{client.name}"] = client.health()
    if svc.settings.ready_check_upstream:
        checks["grsai"] = await svc.upstream.reachable(svc.clock.now())
    ready = all(c["status"] != "failing" for c in checks.values())  # a warning still serves
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


routes = [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
