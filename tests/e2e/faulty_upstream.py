"""A misbehaving HTTP/1.1 server on 127.0.0.1, run in the test's own event loop.

The first path segment picks the behaviour (anything else behaves as `ok`):
- `ok`: 200 at once; `slow`: 200 after a short random delay. The body is GrsAI's poll answer
  (a running task, for the id in the request body) on `.../v1/draw/result`, else `{}`.
- `stall`: no answer until `release()`, then the connection is reset.
- `reset`: the connection is reset (RST) as soon as the request is read.
- `trickle`: headers, then a PNG body in small pieces with pauses between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
from collections import Counter

from tests.unit.test_assets_sniff import png

PICTURE = png(16, 16)
_LINGER_RESET = struct.pack("ii", 1, 0)  # close with RST instead of FIN


class FaultyUpstream:
    """Counts requests by behaviour and lets tests wait for stalled ones (by event, not time)."""

    def __init__(self, seed: int = 1) -> None:
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._release = asyncio.Event()
        self._changed = asyncio.Condition()
        self.stalled = 0
        self.seen: Counter[str] = Counter()
        self.port = 0

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultyUpstream:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def wait_stalled(self, count: int) -> None:
        """Wait until `count` requests are being held."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.stalled >= count)

    def release(self) -> None:
        """Reset every held request; later `stall` requests are held again."""
        self._release.set()
        self._release = asyncio.Event()

    async def close(self) -> None:
        """Stop listening, end every connection and wait for the handlers."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.release()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: that is what these tests do
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is done."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1].split("?")[0]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        behaviour = path.split("/")[1]
        self.seen[behaviour] += 1
        if behaviour == "stall":
            await self._hold()
            behaviour = "reset"
        if behaviour == "reset":
            _reset(writer)
            return False
        if behaviour == "slow":
            await asyncio.sleep(self._rng.uniform(0, 0.02))
        if behaviour == "trickle":
            await self._trickle(writer)
            return True
        answer = b"{}"
        if path.endswith("/v1/draw/result"):
            task = {"id": json.loads(body)["id"], "status": "running", "progress": 10}
            answer = json.dumps({"code": 0, "msg": "success", "data": task}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
        await writer.drain()
        return True

    async def _hold(self) -> None:
        release = self._release
        async with self._changed:
            self.stalled += 1
            self._changed.notify_all()
        try:
            await release.wait()
        finally:
            self.stalled -= 1

    async def _trickle(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(PICTURE))
        for start in range(0, len(PICTURE), 64):
            writer.write(PICTURE[start : start + 64])
            await writer.drain()
            await asyncio.sleep(self._rng.uniform(0, 0.002))


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()
