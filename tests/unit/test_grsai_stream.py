"""Stream mode of the GrsAI-compatible submit paths (no `webHook`): `data: {task}` lines per
change, fed by the live-status hub, ending after the final line.

The app is called as a server calls it (a scope, `receive`, `send`), so each line is seen as it
is sent and the client can go away at a chosen moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Message

from tests.doubles import ManualClock
from tests.unit.conftest import JSON, FakeGrsai, MakeRelay, Relay, task_object
from tests.unit.test_assets_download import URL, FileHost
from tests.unit.test_assets_results import BODY, copy_all, open_relay

NANO = "/v1/draw/nano-banana"
GUARD = 10.0  # a hang guard: every wait here ends on an event long before


class StreamCall:
    """One POST to the app, answered into a queue of sent messages; `leave()` disconnects."""

    def __init__(self, relay: Relay, body: JSON, key: str | None = None) -> None:
        raw = json.dumps(body).encode()
        self.sent: asyncio.Queue[Message] = asyncio.Queue()
        self._gone = asyncio.Event()
        self._body: list[bytes] = [raw]
        headers = [
            (b"host", b"relay.test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"authorization", f"Bearer {key or relay.key}".encode()),
        ]
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": NANO, "raw_path": NANO.encode(),
            "query_string": b"", "root_path": "", "headers": headers,
            "server": ("relay.test", 80), "client": ("127.0.0.1", 5000),
        }  # fmt: skip
        app = relay.asgi

        async def run() -> None:
            await app(scope, self._receive, self.sent.put)

        self.done: asyncio.Task[None] = asyncio.get_running_loop().create_task(run())

    async def _receive(self) -> Message:
        if self._body:
            return {"type": "http.request", "body": self._body.pop(), "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    def leave(self) -> None:
        """The client goes away."""
        self._gone.set()

    async def start(self) -> Message:
        """The response's start message."""
        async with asyncio.timeout(GUARD):
            message = await self.sent.get()
        assert message["type"] == "http.response.start"
        return message

    async def line(self) -> JSON | None:
        """The next `data:` line's task object; None once the response ended."""
        async with asyncio.timeout(GUARD):
            message = await self.sent.get()
        if not message.get("more_body"):
            assert message["body"] == b""
            return None
        raw: bytes = message["body"]
        assert raw.startswith(b"data: ")
        assert raw.endswith(b"\n\n")
        found: JSON = json.loads(raw[len(b"data: ") :])
        return found

    async def json(self) -> tuple[int, JSON]:
        """A plain JSON answer: its status and body."""
        start = await self.start()
        async with asyncio.timeout(GUARD):
            body = await self.sent.get()
        found: JSON = json.loads(body["body"])
        return start["status"], found


def body(**fields: Any) -> JSON:
    """A stream-mode GrsAI submit (no webHook)."""
    return {"model": "nano-banana", "prompt": "a red fox", **fields}


async def settle() -> None:
    """Let every ready coroutine run until nothing more happens (no clock involved)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def progress(relay: Relay, percent: int) -> None:
    """GrsAI's progress callback for the latest task."""
    upstream = relay.grsai.issued[-1]
    response = await relay.callback(relay.grsai.token(), task_object(upstream, "running", percent))
    assert response.status_code == 200


async def succeed(relay: Relay) -> None:
    """GrsAI's final callback: the latest task succeeded with URL."""
    answer = relay.grsai.succeed(relay.grsai.issued[-1], URL)
    assert (await relay.callback(relay.grsai.token(), answer)).status_code == 200


@pytest.fixture(name="relay")
async def _relay(make_relay: MakeRelay) -> Relay:
    """A relay that does not copy results (the final line does not wait for copies)."""
    return await make_relay(mirror_results=False)


async def test_lines_follow_each_change_until_final(relay: Relay) -> None:
    """A line now, one per change, the final one, then the response ends."""
    call = StreamCall(relay, body())
    start = await call.start()
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    first = await call.line()
    assert first is not None
    assert (first["status"], first["progress"], first["results"]) == ("running", 0, None)
    await progress(relay, 40)
    assert (await call.line() or {})["progress"] == 40
    await succeed(relay)
    final = await call.line()
    assert final is not None
    assert (final["id"], final["status"], final["url"]) == (first["id"], "succeeded", URL)
    assert await call.line() is None
    await call.done
    native = await relay.client.get(f"/v1/tasks/{first['id']}", headers=relay.auth())
    assert native.json()["status"] == "succeeded"
    assert relay.services.streams.open_streams(relay.key_id) == 0


async def test_shut_progress_sends_one_final_line(relay: Relay) -> None:
    """With `shutProgress: true` the only line is the final one."""
    call = StreamCall(relay, body(shutProgress=True))
    await call.start()
    await settle()
    await progress(relay, 60)
    await settle()
    assert call.sent.empty()
    await succeed(relay)
    final = await call.line()
    assert final is not None
    assert final["status"] == "succeeded"
    assert await call.line() is None


async def test_client_leaving_does_not_stop_the_task(relay: Relay) -> None:
    """A client gone mid-stream frees its stream slot; the task completes all the same."""
    call = StreamCall(relay, body())
    await call.start()
    first = await call.line()
    assert first is not None
    call.leave()
    async with asyncio.timeout(GUARD):
        await call.done
    assert relay.services.streams.open_streams(relay.key_id) == 0
    await succeed(relay)
    assert (await relay.task(first["id"])).status == "succeeded"


async def test_streams_per_key_is_a_grsai_429(make_relay: MakeRelay) -> None:
    """Over STREAMS_PER_KEY a stream submit is refused before a task exists; polling works."""
    relay = await make_relay(mirror_results=False, streams_per_key=1)
    open_one = StreamCall(relay, body())
    await open_one.start()
    status, answer = await StreamCall(relay, body()).json()
    assert status == 429
    assert answer["code"] == -1
    assert "STREAMS_PER_KEY" in answer["msg"]
    assert relay.grsai.submits == 1
    status, answer = await StreamCall(relay, body(webHook="-1")).json()
    assert (status, answer["code"]) == (200, 0)
    open_one.leave()
    async with asyncio.timeout(GUARD):
        await open_one.done


async def test_refused_submit_is_plain_json_not_a_stream(relay: Relay) -> None:
    """An error before the task exists is GrsAI's JSON error in stream mode too."""
    status, answer = await StreamCall(relay, body(model="flux-kontext-pro")).json()
    assert status == 422
    assert answer["code"] == -1
    assert relay.services.streams.open_streams(relay.key_id) == 0


async def test_shutdown_ends_the_stream_with_the_current_state(relay: Relay) -> None:
    """The relay stopping ends an open stream; a shutProgress one first sends the state."""
    call = StreamCall(relay, body(shutProgress=True))
    await call.start()
    await settle()
    relay.services.watch.close()
    line = await call.line()
    assert line is not None
    assert line["status"] == "running"
    assert await call.line() is None
    relay.services.watch.open()


@pytest.fixture(name="copying")
async def _copying(
    tmp_path: Path, clock: ManualClock, grsai: FakeGrsai
) -> AsyncIterator[tuple[Relay, FileHost]]:
    """A relay that copies results (files served by a FileHost), its key able to sign links."""
    files = FileHost()
    async with contextlib.AsyncExitStack() as stack:
        relay = await open_relay(stack, tmp_path, clock, grsai, files)
        await relay.storage.add_signing_secret(relay.key_id, "whsec_s", clock.now(), None)
        yield relay, files


async def test_final_line_waits_for_our_copy(copying: tuple[Relay, FileHost]) -> None:
    """The final line comes once the copy is stored (progress 99 meanwhile), carrying a
    signed link to it."""
    relay, files = copying
    files.serve(URL, BODY, headers={"Content-Type": "image/png"})
    call = StreamCall(relay, body())
    await call.start()
    first = await call.line()
    assert first is not None
    await succeed(relay)
    held = await call.line()  # final, but the copy is still being made
    assert held is not None
    assert (held["status"], held["progress"], held["results"]) == ("running", 99, None)
    await settle()
    assert call.sent.empty()
    await copy_all(relay)
    final = await call.line()
    assert final is not None
    assert final["status"] == "succeeded"
    assert final["results"][0]["url"].startswith(f"http://relay.test/v1/files/{first['id']}/0?")
    assert await call.line() is None
    assert (await relay.client.get(final["url"])).content == BODY
