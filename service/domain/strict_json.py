"""Strict JSON decoding for data we did not write: precise errors instead of surprises.

Used on request bodies, GrsAI's callbacks and GrsAI's answers alike; a refusal is an
`InvalidJson` naming what is wrong, and the caller decides what it means (a 400 for a client,
a protocol error from GrsAI).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from service.domain.errors import InvalidJson


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
        raise InvalidJson("body is not valid UTF-8") from exc
    if not text.strip():
        raise InvalidJson("body is empty; a JSON object is required")
    if _too_deep(text):
        raise InvalidJson(f"JSON is nested too deeply (over {MAX_DEPTH} levels)")
    value = _decode(text)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise InvalidJson("JSON contains an unpaired surrogate escape")
    return value


# Stateless and built once: `json.loads` with hooks would build a decoder on every call.
_STRICT = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite_float, object_pairs_hook=_no_duplicates
)


def _decode(text: str) -> Any:
    try:
        return _STRICT.decode(text)
    except RecursionError as exc:
        raise InvalidJson("JSON is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError is a ValueError; so are the hooks' refusals
        raise InvalidJson(f"body is not valid JSON: {exc}") from exc


def loads_object(raw: bytes) -> dict[str, Any]:
    """Decode strict JSON that must be an object."""
    value = loads_strict(raw)
    if not isinstance(value, dict):
        raise InvalidJson(f"body must be a JSON object, not {type(value).__name__}")
    return value
