"""Helpers for ASGI code on the hot paths (middleware and the plain ASGI endpoints)."""

from __future__ import annotations

from starlette.types import Scope, Send


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (`name` in lower case, as ASGI gives names)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def send_json(send: Send, body: bytes, status: int = 200) -> None:
    """Answer with a JSON body that is already encoded."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
