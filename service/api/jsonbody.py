"""Strict JSON decoding for bodies we did not write: precise errors instead of surprises."""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope

from service.api.asgi import header
from service.domain.errors import BadRequest, PayloadTooLarge, RequestTimeout


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)  # the common case is decided in C
    if len(obj) < len(pairs):  # a key came twice: name the first repeat
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


MAX_DEPTH = 64
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _too_deep(text: str) -> bool:
    """True when arrays/objects nest deeper than MAX_DEPTH (brackets inside strings ignored)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False  # cheap common case: not enough brackets to be too deep
    depth = 0
    for match in _STRUCTURE.finditer(text):
        mark = match.group()
        if mark in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif mark in "]}":
            depth -= 1
    return False


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def loads_strict(raw: bytes) -> Any:
    """Decode UTF-8 JSON, refusing NaN/Infinity, duplicate keys, absurd numbers, lone
    surrogate escapes and nesting deeper than MAX_DEPTH."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body is not valid UTF-8", code="invalid_json") from exc
    if not text.strip():
        raise BadRequest("body is empty; a JSON object is required", code="invalid_json")
    if _too_deep(text):
        raise BadRequest(
            f"JSON is nested too deeply (over {MAX_DEPTH} levels)", code="invalid_json"
        )
    value = _decode(text)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise BadRequest("JSON contains an unpaired surrogate escape", code="invalid_json")
    return value


# Stateless and built once: `json.loads` with hooks would build a decoder on every call.
_STRICT = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite_float, object_pairs_hook=_no_duplicates
)


def _decode(text: str) -> Any:
    try:
        return _STRICT.decode(text)
    except RecursionError as exc:
        raise BadRequest("JSON is nested too deeply", code="invalid_json") from exc
    except ValueError as exc:  # JSONDecodeError is a ValueError; so are the hooks' refusals
        raise BadRequest(f"body is not valid JSON: {exc}", code="invalid_json") from exc


def loads_object(raw: bytes) -> dict[str, Any]:
    """Decode strict JSON that must be an object."""
    value = loads_strict(raw)
    if not isinstance(value, dict):
        raise BadRequest(
            f"body must be a JSON object, not {type(value).__name__}", code="invalid_json"
        )
    return value


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
