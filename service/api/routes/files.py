"""Signed result links: GET /v1/files/{task_id}/{n}?expires=&sig=, fetched without a key.

The GrsAI-compatible paths hand these out as result URLs (GrsAI's clients download without
credentials). The signature (`service.domain.links`) is checked against the owning key's
current signing secrets, then the file is served exactly as `GET /v1/tasks/{id}/results/{n}`
serves it (ranges, ETag, S3 redirect): the same code.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.api.context import services
from service.api.routes.results import result_ref, serve_result
from service.domain.errors import Forbidden
from service.domain.links import FILES_PATH, link_valid

MAX_SIGNATURE = 64  # an HMAC-SHA256 in unpadded base64url is 43 characters


def _expires(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 12:
        return None
    return int(value)


async def signed_file(request: Request) -> Response:
    """Result `n` of a task, for whoever holds an unexpired link signed for it."""
    svc = services(request)
    task_id, n = result_ref(request)
    expires = _expires(request.query_params.get("expires"))
    signature = request.query_params.get("sig", "")
    if expires is None or not 0 < len(signature) <= MAX_SIGNATURE:
        raise Forbidden("this link is not a signed result link", code="invalid_link")
    task = await svc.storage.task(task_id)
    now = svc.clock.now()
    owner = await svc.storage.api_key_by_id(task.api_key_id) if task else None  # None: revoked
    secrets = await svc.storage.signing_secrets(owner.id, now) if owner else []
    # an unknown task answers as a bad signature does: a link reveals nothing it was not for
    if not link_valid(secrets, task_id, n, expires, signature, now=0):
        raise Forbidden("this link's signature is not valid", code="invalid_link")
    if expires < now:
        raise Forbidden("this link has expired; ask /v1/draw/result for a new one",
                        code="link_expired")  # fmt: skip
    return await serve_result(request, task_id, n)


routes = [Route(FILES_PATH + "/{task_id}/{n}", signed_file, methods=["GET"])]
