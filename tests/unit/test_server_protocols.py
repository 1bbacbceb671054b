"""The protocol classes `serve` uses: httptools by default, h11 as the fallback, both with the
head deadline. Each test serves a tiny app with uvicorn on 127.0.0.1 and speaks raw HTTP/1.1."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service import server
from tests.hostile_cases import read_response

DEADLINE = 0.3
HANG_GUARD = 30.0  # only ever reached when the server fails to act
PROTOCOLS = ["httptools", "h11"]


async def slow(request: Request) -> PlainTextResponse:
    """Answers after several head deadlines have passed."""
    await asyncio.sleep(DEADLINE * 4)
    return PlainTextResponse("slow")


async def quick(request: Request) -> PlainTextResponse:
    """Answers at once."""
    return PlainTextResponse("quick")


@contextlib.asynccontextmanager
async def serving(http: str) -> AsyncIterator[int]:
    """Serve the tiny app on a loopback port with this protocol; yield the port."""
    app = Starlette(routes=[Route("/slow", slow), Route("/quick", quick)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections made before uvicorn is up wait in the backlog
    config = uvicorn.Config(
        app,
        http=server.protocol_class(DEADLINE, http),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_keep_alive=60,
    )
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        running.should_exit = True
        await task
        sock.close()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closes the connection without answering."""
    async with asyncio.timeout(HANG_GUARD):
        return await reader.read() == b""


def head(path: str) -> bytes:
    """A complete GET head for `path` on a kept-alive connection."""
    return f"GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n".encode()


def test_auto_serves_on_httptools_where_it_is_installed() -> None:
    """`auto` picks httptools (installed with uvicorn[standard]); `h11` asks for h11."""
    assert issubclass(server.protocol_class(1.0), HttpToolsProtocol)
    assert issubclass(server.protocol_class(1.0, "h11"), H11Protocol)
    assert server.protocol_class(2.5).header_timeout == 2.5


def test_auto_falls_back_to_h11_without_httptools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where httptools is missing, `auto` serves on h11 and `httptools` is refused plainly."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert issubclass(server.protocol_class(1.0), H11Protocol)
    with pytest.raises(RuntimeError, match="httptools is not installed"):
        server.protocol_class(1.0, "httptools")


@pytest.mark.parametrize("http", PROTOCOLS)
async def test_a_head_that_never_completes_is_cut_off(http: str) -> None:
    """A connection that sends half a head and stalls is closed at the deadline."""
    async with serving(http) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /quick HTTP/1.1\r\nHost: re")
        assert await closed_by_server(reader)
        writer.close()


@pytest.mark.parametrize("http", PROTOCOLS)
async def test_the_next_head_on_a_kept_alive_connection_has_a_deadline_too(http: str) -> None:
    """After an answered request, a second head trickled too slowly is cut off."""
    async with serving(http) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head("/quick"))
        answer = await read_response(reader)
        assert (answer.status, answer.body) == (200, b"quick")
        writer.write(b"GET /quick HTTP/1.1\r\n")
        assert await closed_by_server(reader)
        writer.close()


@pytest.mark.parametrize("http", PROTOCOLS)
async def test_a_request_handled_for_longer_than_the_deadline_is_answered(http: str) -> None:
    """The deadline is on receiving the head, never on the app's work."""
    async with serving(http) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head("/slow"))
        answer = await read_response(reader)
        assert (answer.status, answer.body) == (200, b"slow")
        writer.write(head("/quick"))
        assert (await read_response(reader)).body == b"quick"
        writer.close()


@pytest.mark.parametrize("http", PROTOCOLS)
async def test_pipelined_requests_are_all_answered(http: str) -> None:
    """Two heads sent at once: the second waits for the first and is not cut off meanwhile."""
    async with serving(http) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head("/quick") + head("/slow") + head("/quick"))
        bodies = [(await read_response(reader)).body for _ in range(3)]
        assert bodies == [b"quick", b"slow", b"quick"]
        writer.close()


@pytest.mark.parametrize("http", PROTOCOLS)
@pytest.mark.parametrize(
    "wire",
    [
        b"GET /quick HTTP/1.1\r\nHost: relay\r\nno colon here\r\n\r\n",
        b"POST /quick HTTP/1.1\r\nHost: relay\r\nContent-Length: abc\r\n\r\n",
        b"GET /qu ick HTTP/1.1\r\nHost: relay\r\n\r\n",
    ],
    ids=["header without colon", "Content-Length abc", "space in the path"],
)
async def test_a_request_the_parser_refuses_gets_a_json_400(http: str, wire: bytes) -> None:
    """uvicorn answers these in plain text before any app runs; the relay's answer is its JSON."""
    async with serving(http) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(wire)
        answer = await read_response(reader)
        assert answer.status == 400
        assert answer.headers["content-type"] == "application/json"
        assert json.loads(answer.body)["error"]["code"] == "bad_request"
        writer.close()
