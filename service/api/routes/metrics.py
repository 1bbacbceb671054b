"""GET /metrics: Prometheus text format, behind METRICS_TOKEN (or loopback only)."""

from __future__ import annotations

import hmac
import ipaddress

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.api.context import services
from service.domain.errors import Forbidden, Unauthorized


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def metrics(request: Request) -> Response:
    """Every metric, with scrape-time queue and task gauges."""
    svc = services(request)
    token = svc.settings.metrics_token
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
            raise Unauthorized("metrics need Authorization: Bearer <METRICS_TOKEN>")
    elif not _loopback(request):
        raise Forbidden("metrics are served to loopback only unless METRICS_TOKEN is set")
    m = svc.metrics
    for name, alive in (
        ("poller", svc.poller.alive),
        ("copier", svc.copier.alive),
        ("deliverer", svc.deliverer.alive),
    ):
        m.workers_alive.labels(name).set(1 if alive else 0)
    await m.refresh()
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics, methods=["GET"])]
