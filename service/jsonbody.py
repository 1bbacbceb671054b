"""Strict JSON decoding for bodies we did not write: precise errors instead of surprises."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from starlette.requests import Request

from service.errors import BadRequest, PayloadTooLarge, RequestTimeout


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key[:40]!r}")
        obj[key] = value
    return obj


def loads_strict(raw: bytes) -> Any:
    """Decode UTF-8 JSON, refusing NaN/Infinity, duplicate keys, absurd numbers and deep nesting."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body is not valid UTF-8", code="invalid_json") from exc
    if not text.strip():
        raise BadRequest("body is empty; a JSON object is required", code="invalid_json")
    try:
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_no_duplicates,
        )
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
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()) or len(declared) > 18:
            raise BadRequest("Content-Length is not a valid number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body is larger than {limit} bytes", limit=limit)
                chunks.append(chunk)
    except TimeoutError as exc:
        raise RequestTimeout(f"the body did not arrive within {deadline:g} s") from exc
    return b"".join(chunks)
