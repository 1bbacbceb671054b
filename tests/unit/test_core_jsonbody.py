"""Strict JSON for bodies we did not write, and body size limits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest
from starlette.requests import Request
from starlette.types import Message

from service.api.jsonbody import read_body, receive_body
from service.domain.errors import BadRequest, InvalidJson, PayloadTooLarge, RequestTimeout
from service.domain.strict_json import loads_object, loads_strict


def refused(raw: bytes) -> InvalidJson:
    """Decode `raw`, which must be refused as invalid JSON; return the error."""
    with pytest.raises(InvalidJson) as caught:
        loads_strict(raw)
    assert caught.value.code == "invalid_json"
    assert caught.value.status == 400
    return caught.value


def test_plain_json_is_read() -> None:
    """Ordinary JSON with unicode, floats and nesting is read as usual."""
    raw = '{"a": [1, 2.5, -3e2, true, null], "b": {"c": "ü€😀"}, "d": 1e308}'.encode()
    assert loads_strict(raw) == {
        "a": [1, 2.5, -300.0, True, None],
        "b": {"c": "ü€😀"},
        "d": 1e308,
    }


@pytest.mark.parametrize(
    "raw",
    [b"NaN", b"Infinity", b"-Infinity", b'{"x": NaN}', b"[Infinity]", b'{"x": -Infinity}'],
)
def test_non_finite_constants_refused(raw: bytes) -> None:
    """NaN, Infinity and -Infinity are not JSON and are refused."""
    assert "not valid JSON" in refused(raw).message


@pytest.mark.parametrize("raw", [b"1e999", b"-1e999", b'{"x": 1e400}', b"[1.5e309]"])
def test_overflowing_floats_refused(raw: bytes) -> None:
    """Numbers that overflow to infinity are refused."""
    assert "out of range" in refused(raw).message


@pytest.mark.parametrize(
    "raw", [b'{"a": 1, "a": 2}', b'{"x": {"k": 1, "k": 1}}', b'[{"a": 1, "b": 2, "a": 3}]']
)
def test_duplicate_keys_refused(raw: bytes) -> None:
    """A duplicate key anywhere is refused rather than silently last-wins."""
    assert "duplicate key" in refused(raw).message


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 100_000, b"[" * 5000 + b"]" * 5000])
def test_deep_nesting_refused(raw: bytes) -> None:
    """Absurdly deep nesting is refused with a 400, not a crash."""
    assert "nested too deeply" in refused(raw).message


@pytest.mark.parametrize("raw", [b"\xff", b'{"a": "\xc3"}', b'{"a": "\xed\xa0\x80"}', b"\xfe\xff"])
def test_invalid_utf8_refused(raw: bytes) -> None:
    """Bodies that are not valid UTF-8 (including encoded surrogates) are refused."""
    assert "UTF-8" in refused(raw).message


@pytest.mark.parametrize("raw", [b"", b"   ", b"\n\t\r "])
def test_empty_body_refused(raw: bytes) -> None:
    """An empty or blank body is refused."""
    assert "empty" in refused(raw).message


@pytest.mark.parametrize("raw", [b"1" + b"0" * 5000, b'{"n": -' + b"9" * 5000 + b"}"])
def test_huge_integers_refused(raw: bytes) -> None:
    """Integers with thousands of digits are refused, not parsed at quadratic cost."""
    refused(raw)


@pytest.mark.parametrize(
    "raw", [b"{", b'{"a" 1}', b"{'a': 1}", b'{"a": 1,}', b"\xef\xbb\xbf{}", b"{} {}"]
)
def test_malformed_json_refused(raw: bytes) -> None:
    """Syntax errors, single quotes, trailing commas, a BOM and trailing data are refused."""
    refused(raw)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [(b"[]", "list"), (b"[{}]", "list"), (b"1", "int"), (b'"x"', "str"), (b"null", "NoneType")],
)
def test_loads_object_refuses_non_objects(raw: bytes, kind: str) -> None:
    """`loads_object` refuses arrays and scalars, naming what it got."""
    with pytest.raises(InvalidJson) as caught:
        loads_object(raw)
    assert caught.value.code == "invalid_json"
    assert kind in caught.value.message


def test_loads_object_reads_an_object() -> None:
    """`loads_object` returns the decoded object."""
    assert loads_object(b' {"a": [1]} ') == {"a": [1]}


# --- read_body ------------------------------------------------------------------------------


def request_with(chunks: Iterable[bytes], headers: dict[str, str] | None = None) -> Request:
    """A Starlette request whose body arrives in `chunks`, with these headers."""
    pending: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks
    ]
    pending.append({"type": "http.request", "body": b"", "more_body": False})

    async def receive() -> Message:
        return pending.pop(0)

    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Request(scope, receive)


async def test_read_body_within_limit() -> None:
    """A body at exactly the limit is read whole."""
    body = await read_body(request_with([b"ab", b"cd"], {"content-length": "4"}), 4)
    assert body == b"abcd"


async def test_read_body_refuses_declared_length_over_limit() -> None:
    """A Content-Length over the limit is refused before reading anything."""
    with pytest.raises(PayloadTooLarge) as caught:
        await read_body(request_with([b"x" * 10], {"content-length": "10"}), 9)
    assert caught.value.status == 413
    assert caught.value.details == {"limit": 9}


async def test_read_body_refuses_streamed_body_over_limit() -> None:
    """A body without Content-Length is cut off as soon as it passes the limit."""
    with pytest.raises(PayloadTooLarge):
        await read_body(request_with([b"x" * 6, b"x" * 6, b"x" * 6]), 10)


@pytest.mark.parametrize("declared", ["abc", "-1", "1e3", "١٢", "9" * 19, " 5"])
async def test_read_body_refuses_bad_content_length(declared: str) -> None:
    """A Content-Length that is not plain ASCII digits is a bad request."""
    with pytest.raises(BadRequest) as caught:
        await read_body(request_with([b"x"], {"content-length": declared}), 100)
    assert not isinstance(caught.value, PayloadTooLarge)


async def test_read_body_gives_up_on_a_stalled_body() -> None:
    """A body that stops arriving is refused with 408 once the deadline passes."""
    stalled = asyncio.Event()
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"{", "more_body": True}
        await stalled.wait()  # the client never sends the rest
        return {"type": "http.request", "body": b"", "more_body": False}

    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": []}
    with pytest.raises(RequestTimeout) as caught:
        await read_body(Request(scope, receive), 100, 0.05)
    assert caught.value.status == 408


async def test_receive_body_reports_a_client_that_left() -> None:
    """A disconnect before the body is complete is a clear client_disconnected error."""
    messages: list[Message] = [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": []}
    with pytest.raises(BadRequest) as caught:
        await receive_body(scope, receive, 100, 1.0)
    assert caught.value.code == "client_disconnected"
