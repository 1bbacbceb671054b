"""GrsAI's streamed submit answer: every dialect of frames, the bounds, garbage, refusals."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx
import pytest

from service.domain.errors import (
    UpstreamError,
    UpstreamOutcomeUnknown,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
)
from service.upstream.clients import watched_client
from service.upstream.frames import FrameSplitter, StreamFrame
from service.upstream.grsai import GrsaiClient

RUNNING = {"id": "7-abc", "status": "running", "progress": 40, "results": None}
DONE = {
    "id": "7-abc",
    "status": "succeeded",
    "progress": 100,
    "results": [{"url": "https://files.test/a.png", "content": ""}],
}


def line(obj: object) -> bytes:
    """One compact JSON text."""
    return json.dumps(obj, separators=(",", ":")).encode()


def split(*chunks: bytes, **limits: int) -> list[tuple[dict[str, object] | None, str | None]]:
    """Feed `chunks` to a splitter; the (object, problem) of every frame, in order."""
    splitter = FrameSplitter(**limits)
    frames = [f for chunk in chunks for f in splitter.feed(chunk)] + splitter.finish()
    return [(f.body, f.problem) for f in frames]


# --- the splitter ---------------------------------------------------------------------------


def test_sse_lines_with_blank_separators() -> None:
    """`data: {...}` lines separated by blank lines give one frame each."""
    body = b"data: " + line(RUNNING) + b"\n\ndata: " + line(DONE) + b"\n\n"
    assert split(body) == [(RUNNING, None), (DONE, None)]


def test_bare_json_lines() -> None:
    """Bare JSON lines without `data: ` are frames too."""
    assert split(line(RUNNING) + b"\n" + line(DONE) + b"\n") == [(RUNNING, None), (DONE, None)]


def test_several_frames_on_one_line() -> None:
    """Frames sharing one line, with or without repeated `data:` prefixes, are all read."""
    glued = b"data: " + line(RUNNING) + b"data: " + line(DONE) + b"\n"
    spaced = b"data: " + line(RUNNING) + b" " + line(DONE) + b"\n"
    bare = line(RUNNING) + line(DONE) + b"\n"
    for body in (glued, spaced, bare):
        assert split(body) == [(RUNNING, None), (DONE, None)]


def test_frames_split_across_chunks_and_crlf() -> None:
    """A frame cut anywhere between chunks, with CRLF line ends, is put back together."""
    body = b"data: " + line(RUNNING) + b"\r\n\r\ndata:" + line(DONE) + b"\r\n"
    for cut in (1, 7, len(body) // 2, len(body) - 1):
        assert split(body[:cut], body[cut:]) == [(RUNNING, None), (DONE, None)]
    one_byte_at_a_time = [body[i : i + 1] for i in range(len(body))]
    assert split(*one_byte_at_a_time) == [(RUNNING, None), (DONE, None)]


def test_single_final_line_without_line_break() -> None:
    """With shutProgress the body is one final line, maybe without a trailing newline."""
    assert split(b"data: " + line(DONE)) == [(DONE, None)]


def test_sse_comments_fields_and_done_marker_are_skipped() -> None:
    """Heartbeat comments, `event:`/`id:`/`retry:` lines and a `[DONE]` marker carry no frame."""
    body = (
        b": ping\nevent: message\nid: 3\nretry: 100\ndata: " + line(RUNNING) + b"\ndata: [DONE]\n"
    )
    assert split(body) == [(RUNNING, None)]


def test_garbage_becomes_unreadable_frames() -> None:
    """Non-JSON, non-objects, bad UTF-8 and strict-JSON refusals are frames with a problem."""
    body = b"<html>\n[1,2]\n\xff\xfe\n" + b'{"a":1,"a":2}\n' + b'{"p":NaN}\n' + line(DONE) + b"\n"
    frames = split(body)
    assert [f[0] for f in frames] == [None, None, None, None, None, DONE]
    problems = [f[1] for f in frames[:5]]
    assert all(problems), problems
    assert "duplicate key" in str(problems[3])


def test_a_long_line_ends_the_stream() -> None:
    """A line over the limit raises, even before its end arrives (memory stays bounded)."""
    splitter = FrameSplitter(max_line=100)
    assert splitter.feed(b"data: " + b"x" * 50) == []
    with pytest.raises(UpstreamProtocolError, match="longer than 100 bytes"):
        splitter.feed(b"y" * 60)
    with pytest.raises(UpstreamProtocolError):
        FrameSplitter(max_line=100).feed(b"z" * 200 + b"\n")


def test_frames_per_line_are_bounded() -> None:
    """A line packed with frames gives at most `max_per_line` of them, then one problem."""
    frames = split(line(RUNNING) * 10 + b"\n", max_per_line=3)
    assert [f[0] for f in frames] == [RUNNING] * 3 + [None]
    assert "more than 3 frames" in str(frames[3][1])


def test_unreadable_frames_in_a_row_end_the_stream() -> None:
    """A stream of garbage is given up after `max_bad` unreadable frames in a row; a good
    frame in between resets the count."""
    mixed = (b"junk\n" * 3 + line(RUNNING) + b"\n") * 5
    assert len(split(mixed, max_bad=3)) == 20
    with pytest.raises(UpstreamProtocolError, match="more than 3 unreadable"):
        split(b"junk\n" * 4, max_bad=3)


def test_unreadable_frame_excerpt_is_bounded() -> None:
    """What is kept of an unreadable frame (for its event) is at most 2 KiB."""
    splitter = FrameSplitter()
    (frame,) = splitter.feed(b"x" * 100_000 + b"\n")
    assert frame.body is None
    assert len(frame.raw) == 2048


# --- the client over MockTransport -----------------------------------------------------------


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def client(
    status: int, parts: Iterable[bytes], content_type: str = "text/event-stream"
) -> tuple[GrsaiClient, list[httpx.Request]]:
    """A GrsAI client whose submit answers `status` with a body streamed in `parts`."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            status, headers={"Content-Type": content_type}, content=_chunks(list(parts))
        )

    http = watched_client(
        "streams", capacity=2, timeout=httpx.Timeout(5.0), transport=httpx.MockTransport(handle)
    )
    return GrsaiClient(http, "http://grsai.test", "sk-x"), seen


async def frames_of(grsai: GrsaiClient) -> list[StreamFrame]:
    """Every frame of one streamed submit."""
    async with grsai.submit_streaming("/v1/draw/nano-banana", {"prompt": "p"}, idle=5) as frames:
        return [frame async for frame in frames]


@pytest.mark.parametrize("content_type", ["text/event-stream", "application/json"])
async def test_client_reads_task_frames(content_type: str) -> None:
    """Both content types give observations, and the request carries no webHook."""
    grsai, seen = client(
        200, [b"data: " + line(RUNNING) + b"\n\nda", b"ta: " + line(DONE) + b"\n\n"], content_type
    )
    frames = await frames_of(grsai)
    assert [f.observation.status if f.observation else None for f in frames] == [
        "running",
        "succeeded",
    ]
    assert {f.upstream_id for f in frames} == {"7-abc"}
    sent = json.loads(seen[0].content)
    assert "webHook" not in sent
    assert seen[0].headers["accept-encoding"] == "identity"


async def test_client_reports_invalid_task_objects() -> None:
    """A JSON object that is not a task (bad status) is a frame with a problem, not an error."""
    grsai, _ = client(200, [line({"id": "7-abc", "status": "exploded"}) + b"\n"])
    (frame,) = await frames_of(grsai)
    assert frame.observation is None
    assert "status" in str(frame.problem)


async def test_client_refusal_in_the_stream_raises() -> None:
    """`{"code":-1,...}` in place of a frame is GrsAI refusing the task."""
    grsai, _ = client(200, [line({"code": -1, "msg": "insufficient credits", "data": None})])
    with pytest.raises(UpstreamRejected, match="insufficient credits"):
        await frames_of(grsai)


async def test_client_pretty_printed_refusal_is_read_whole() -> None:
    """A refusal spread over several lines is recognised at the end of the body."""
    pretty = json.dumps({"code": -1, "msg": "model offline", "data": None}, indent=2).encode()
    grsai, _ = client(200, [pretty], "application/json")
    with pytest.raises(UpstreamRejected, match="model offline"):
        await frames_of(grsai)


async def test_client_envelope_with_id_names_the_task() -> None:
    """An accepted-envelope (`{"code":0,"data":{"id":...}}`) names the task without a state."""
    grsai, _ = client(200, [line({"code": 0, "msg": "success", "data": {"id": "9-x"}})])
    (frame,) = await frames_of(grsai)
    assert (frame.upstream_id, frame.observation, frame.problem) == ("9-x", None, None)


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, UpstreamRejected), (429, UpstreamRejected), (502, UpstreamOutcomeUnknown)],
)
async def test_client_http_errors(status: int, error: type[UpstreamError]) -> None:
    """HTTP errors map like a plain submit's: 4xx refused, 5xx outcome unknown."""
    grsai, _ = client(status, [b'{"code":-1,"msg":"nope"}'], "application/json")
    with pytest.raises(error):
        await frames_of(grsai)


async def test_client_hostile_line_is_refused() -> None:
    """An endless line without a break ends the stream with a protocol error."""
    grsai, _ = client(200, [b"data: {" + b"x" * 65536 for _ in range(32)])
    with pytest.raises(UpstreamProtocolError):
        await frames_of(grsai)


async def test_client_read_timeout_and_broken_stream() -> None:
    """A quiet stream is `UpstreamTimeout`; a dropped one `UpstreamOutcomeUnknown`."""
    for failure, expected in (
        (httpx.ReadTimeout("quiet"), UpstreamTimeout),
        (httpx.RemoteProtocolError("peer closed"), UpstreamOutcomeUnknown),
    ):

        async def body(fail: Exception = failure) -> AsyncIterator[bytes]:
            yield b"data: " + line(RUNNING) + b"\n"
            raise fail

        def handle(request: httpx.Request, make: Callable[[], AsyncIterator[bytes]] = body) -> Any:
            return httpx.Response(200, content=make())

        http = watched_client(
            "streams", capacity=1, timeout=httpx.Timeout(5.0), transport=httpx.MockTransport(handle)
        )
        grsai = GrsaiClient(http, "http://grsai.test", "sk-x")
        got: list[StreamFrame] = []

        async def read(into: list[StreamFrame] = got, client: GrsaiClient = grsai) -> None:
            async with client.submit_streaming("/v1/draw/x", {}, idle=5) as frames:
                async for frame in frames:
                    into.append(frame)  # kept frame by frame, up to the error

        with pytest.raises(expected):
            await read()
        assert len(got) == 1  # the frame before the failure was delivered
        await http.aclose()
