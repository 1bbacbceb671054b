"""Reading request bodies: bounded in size (413) and in time (408), for Starlette endpoints and
plain ASGI ones alike. Decoding them is `service.domain.strict_json`'s work."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.types import Receive, Scope

from service.api.asgi import header
from service.domain.errors import BadRequest, PayloadTooLarge, RequestTimeout


async def read_body(request: Request, limit: int, deadline: float | None = None) -> bytes:
    """Read the request body: at most `limit` bytes (413), within `deadline` seconds (408)."""
    return await receive_body(request.scope, request.receive, limit, deadline)


def _declared_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadRequest("Content-Length is not a valid number")
    return int(value)


async def receive_body(
    scope: Scope, receive: Receive, limit: int, deadline: float | None = None
) -> bytes:
    """`read_body` for a plain ASGI endpoint: the same limits, errors and deadline."""
    declared = _declared_length(scope)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            while True:
                message = await receive()
                if message["type"] != "http.request":  # http.disconnect
                    raise BadRequest(
                        "client disconnected before sending the whole body",
                        code="client_disconnected",
                    )
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body is larger than {limit} bytes", limit=limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError as exc:
        raise RequestTimeout(f"the body did not arrive within {deadline:g} s") from exc
    return b"".join(chunks)
