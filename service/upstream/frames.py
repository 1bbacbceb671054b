"""Splitting GrsAI's streamed submit answer into frames, whatever its dialect.

A stream (`webHook` absent) is lines of `data: {task json}`, as `text/event-stream` or as
`application/json`; some hosts send bare JSON lines without `data: `, several frames may share
one line, and with `shutProgress` there is a single final line. A hostile or broken host must
not exhaust memory: a line longer than `max_line` bytes ends the stream with
`UpstreamProtocolError`, at most `max_per_line` frames are taken from one line, and more than
`max_bad` unreadable frames in a row end it too.

`FrameSplitter` is pure (bytes in, frames out); the GrsAI client feeds it the response body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from service.domain.errors import InvalidJson, Malformed, UpstreamProtocolError, UpstreamRejected
from service.domain.observation import Observation, parse_task_object
from service.domain.strict_json import loads_object

MAX_LINE = 1024 * 1024  # a task object with 64 long result URLs is ~300 KiB
MAX_PER_LINE = 16
MAX_BAD = 20
EXCERPT = 2048  # bytes of an unreadable frame kept for its event
_SSE_FIELDS = (b"event:", b"id:", b"retry:")  # SSE lines that carry no task
_SCANNER = json.JSONDecoder()  # only finds where one value ends; `loads_object` judges it


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a stream: its raw bytes and the object in it, or why it is unreadable."""

    raw: bytes
    body: dict[str, Any] | None = None
    problem: str | None = None


def _payloads(line: bytes, limit: int) -> list[tuple[bytes, str | None]]:
    """The JSON texts on one line (after any `data:` prefixes), or a problem with the rest."""
    found: list[tuple[bytes, str | None]] = []
    rest = line.strip()
    while rest:
        if rest.startswith(b"data:"):
            rest = rest[5:].lstrip()
            continue
        if rest == b"[DONE]":  # not GrsAI's, but common in streamed APIs: an end marker
            break
        if len(found) == limit:
            found.append((rest, f"more than {limit} frames on one line"))
            break
        try:
            text = rest.decode("utf-8")
            _, end = _SCANNER.raw_decode(text)
        except UnicodeDecodeError:
            found.append((rest, "frame is not valid UTF-8"))
            break
        except (ValueError, RecursionError):  # JSONDecodeError, or absurd nesting
            found.append((rest, "frame is not JSON"))
            break
        size = len(text[:end].encode("utf-8"))
        found.append((rest[:size], None))
        rest = rest[size:].lstrip()
    return found


class FrameSplitter:
    """Turns the chunks of a stream body into `Frame`s, bounded in memory."""

    def __init__(
        self, *, max_line: int = MAX_LINE, max_per_line: int = MAX_PER_LINE, max_bad: int = MAX_BAD
    ) -> None:
        self._max_line = max_line
        self._max_per_line = max_per_line
        self._max_bad = max_bad
        self._buffer = bytearray()
        self._bad_in_a_row = 0

    def feed(self, chunk: bytes) -> list[Frame]:
        """The frames completed by `chunk` (a line ends at LF; a CR before it is dropped)."""
        self._buffer += chunk
        frames: list[Frame] = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            if end - start > self._max_line:
                self._too_long()
            frames += self._line(bytes(self._buffer[start:end]))
            start = end + 1
        del self._buffer[:start]
        if len(self._buffer) > self._max_line:
            self._too_long()
        return frames

    def finish(self) -> list[Frame]:
        """The frames of a last line without a line break (the body ended)."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return self._line(rest)

    def _too_long(self) -> None:
        self._buffer.clear()
        raise UpstreamProtocolError(f"GrsAI stream line longer than {self._max_line} bytes")

    def _line(self, line: bytes) -> list[Frame]:
        line = line.rstrip(b"\r").strip()
        if not line or line.startswith(b":") or line.startswith(_SSE_FIELDS):
            return []  # blank separator, SSE comment (a heartbeat), or an SSE field
        frames = []
        for text, problem in _payloads(line, self._max_per_line):
            frames.append(self._frame(text, problem))
        return frames

    def _frame(self, text: bytes, problem: str | None) -> Frame:
        if problem is None:
            try:
                frame = Frame(text, body=loads_object(text))
            except InvalidJson as exc:
                problem = exc.message
            else:
                self._bad_in_a_row = 0
                return frame
        self._bad_in_a_row += 1
        if self._bad_in_a_row > self._max_bad:
            raise UpstreamProtocolError(
                f"GrsAI stream sent more than {self._max_bad} unreadable frames in a row"
            )
        return Frame(text[:EXCERPT], problem=problem)


def message(body: Any, fallback: str) -> str:
    """The human text of a GrsAI answer (`msg`, `message` or `error`), else `fallback`."""
    if isinstance(body, dict):
        for key in ("msg", "message", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:500]
    return fallback


ENVELOPE_PEEK = 64 * 1024  # a refusal pretty-printed over several lines is read whole


@dataclass(frozen=True, slots=True)
class StreamFrame:
    """One frame of a streamed submit answer: what GrsAI said, or why it is unusable."""

    raw: bytes
    observation: Observation | None = None
    upstream_id: str | None = None  # an envelope may name the task without its state
    problem: str | None = None


def _stream_frame(frame: Frame) -> StreamFrame:
    """Read one frame: a task object, or a `{code, msg, data}` envelope (a refusal raises)."""
    body = frame.body
    if body is None:
        return StreamFrame(frame.raw, problem=frame.problem)
    if "code" in body and "status" not in body:
        code, data = body.get("code"), body.get("data")
        if code != 0:
            raise UpstreamRejected(message(body, f"GrsAI refused the task (code {code})"))
        task_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(task_id, str) or not task_id:
            return StreamFrame(frame.raw, problem="envelope without a task id")
        if "status" not in data:
            return StreamFrame(frame.raw, upstream_id=task_id[:128])
        body = data
    try:
        observation = parse_task_object(body)
    except Malformed as exc:
        return StreamFrame(frame.raw, problem=exc.message)
    return StreamFrame(frame.raw, observation, observation.upstream_id)


async def stream_frames(response: httpx.Response) -> AsyncIterator[StreamFrame]:
    """The frames of a streamed submit answer, read as they arrive (a refusal raises)."""
    splitter = FrameSplitter()
    head = bytearray()  # the body's start, while no line held a JSON object
    objects = False
    async for chunk in response.aiter_raw():
        if not objects and len(head) < ENVELOPE_PEEK:
            head += chunk[: ENVELOPE_PEEK - len(head)]
        for frame in splitter.feed(chunk):
            objects = objects or frame.body is not None
            yield _stream_frame(frame)
    for frame in splitter.finish():
        objects = objects or frame.body is not None
        yield _stream_frame(frame)
    if not objects and head.strip():  # e.g. a refusal pretty-printed over several lines
        try:
            whole = loads_object(bytes(head))
        except Malformed:
            return
        yield _stream_frame(Frame(bytes(head), body=whole))


async def read_at_most(response: httpx.Response, limit: int) -> bytes:
    """Up to `limit` bytes of a streamed body (a hostile error page is not read whole)."""
    raw = bytearray()
    async for chunk in response.aiter_raw():
        raw += chunk[: limit - len(raw)]
        if len(raw) >= limit:
            break
    return bytes(raw)
