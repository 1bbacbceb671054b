"""A Server-Sent Events reader: lines in, events out (pure; the HTTP side is `client`).

Follows the WHATWG event-stream rules the relay's stream needs: `field: value` lines (one
optional space after the colon), several `data:` lines joined with newlines, comments (`:` lines,
the relay's heartbeats) counted but not dispatched, an event dispatched at a blank line and only
when it carries data, the last `id:` kept across events (it is what `Last-Event-ID` resumes from),
and `retry:` read as milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event."""

    event: str
    data: str
    id: str | None


class SseParser:
    """Feed it the stream's lines (without their line ends); it returns finished events."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self.comments = 0
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SseEvent | None:
        """Take one line; return the event it completes, if any."""
        line = line.removesuffix("\r")
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None  # unknown fields are ignored, as the standard says

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(event=event or "message", data="\n".join(data), id=self.last_id)
