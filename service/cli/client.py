"""The relay's HTTP API as the command line uses it: submit, read, stream and download a task.

Failures end a command with one line and an exit code, never a traceback::

    CommandFailed           exit 2 unless given: a usage problem
    ├── RelayUnreachable    no answer from the relay (refused, timed out, dropped)
    └── ApiError            the relay answered with an error: its JSON `error.message`
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from service.cli.sse import SseEvent, SseParser

USAGE = 2
CONNECT_TIMEOUT = 5.0
# The relay sends a heartbeat every STREAM_HEARTBEAT seconds (15 by default) on an idle stream:
# a stream silent for four of them is dead, and is reconnected.
STREAM_READ_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 300.0


class Sink(Protocol):
    """Where a download's bytes go."""

    def write(self, chunk: bytes, /) -> object:
        """Take the next chunk."""


class CommandFailed(Exception):
    """A command's failure, said in one line, with the exit code it ends with."""

    def __init__(self, message: str, exit_code: int = USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class RelayUnreachable(CommandFailed):
    """The relay did not answer (connection refused or dropped, a timeout)."""


class ApiError(CommandFailed):
    """The relay answered with an error status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"the relay answered {status} {code}: {message}")
        self.status = status
        self.code = code


def api_error(response: httpx.Response) -> ApiError:
    """The relay's JSON error (`{"error": {"code", "message"}}`) of a read response, as one line."""
    code, message = "http_error", response.text.strip()[:200] or response.reason_phrase
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
    return ApiError(response.status_code, code, " ".join(message.split()))


def describe(exc: httpx.TransportError) -> str:
    """A transport error in a few words (httpx's own text is often empty)."""
    text = str(exc).strip()
    kind = {
        httpx.ConnectError: "connection refused or unreachable",
        httpx.ConnectTimeout: "no answer to connect",
        httpx.ReadTimeout: "no data within the read timeout",
        httpx.RemoteProtocolError: "the connection closed mid-answer",
        httpx.ReadError: "the connection broke",
    }.get(type(exc), type(exc).__name__)
    return f"{kind} ({text})" if text and text not in kind else kind


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Why a task's event stream ended without an error."""

    settled: bool  # 204: the task is settled and the client holds its last state


class RelayClient:
    """One relay at `base_url`, called with API key `key` (the transport is a test seam)."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        stream_read_timeout: float = STREAM_READ_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {key}"}
        self._stream_timeout = httpx.Timeout(CONNECT_TIMEOUT, read=stream_read_timeout)
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
            follow_redirects=True,  # a presigned S3 copy; httpx drops Authorization off-origin
            headers={"User-Agent": "grsai-relay-cli"},
        )

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    def task_url(self, task_id: str) -> str:
        """The task's resource URL."""
        return f"{self.base_url}/v1/tasks/{quote(task_id, safe='')}"

    def _unreachable(self, exc: httpx.TransportError) -> RelayUnreachable:
        return RelayUnreachable(f"cannot reach the relay at {self.base_url}: {describe(exc)}")

    async def submit(self, body: Mapping[str, Any], idempotency_key: str) -> dict[str, Any]:
        """POST /v1/tasks; a retry with the same `idempotency_key` never makes a second task."""
        headers = {**self._auth, "Idempotency-Key": idempotency_key}
        try:
            response = await self._http.post(
                f"{self.base_url}/v1/tasks", json=dict(body), headers=headers
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        return self._task(response)

    async def task(self, task_id: str) -> dict[str, Any]:
        """GET /v1/tasks/{id}."""
        try:
            response = await self._http.get(self.task_url(task_id), headers=self._auth)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        return self._task(response)

    @staticmethod
    def _task(response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise api_error(response)
        try:
            task = response.json()
        except ValueError:
            task = None
        if not isinstance(task, dict) or not isinstance(task.get("id"), str):
            raise CommandFailed(f"the relay answered {response.status_code} without a task")
        return task

    async def events(
        self, task_id: str, last_event_id: str | None, parser: SseParser
    ) -> AsyncIterator[SseEvent | StreamEnd]:
        """GET /v1/tasks/{id}/events: each event, then a `StreamEnd` when the server ends the
        stream. A dropped or silent connection raises `RelayUnreachable`."""
        headers = {**self._auth, "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        url = f"{self.task_url(task_id)}/events"
        try:
            async with self._http.stream(
                "GET", url, headers=headers, timeout=self._stream_timeout
            ) as response:
                if response.status_code == 204:
                    yield StreamEnd(settled=True)
                    return
                if response.status_code != 200:
                    await response.aread()
                    raise api_error(response)
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        yield StreamEnd(settled=False)

    def is_ours(self, url: str) -> bool:
        """Whether `url` is on this relay (so it may carry the API key)."""
        own = httpx.URL(self.base_url)
        other = httpx.URL(url)
        return (other.scheme, other.host, other.port) == (own.scheme, own.host, own.port)

    async def download(self, url: str, sink: Sink) -> httpx.Headers:
        """Stream the file at `url` into `sink` (a binary file); the key goes only to the relay."""
        headers = self._auth if self.is_ours(url) else {}
        timeout = httpx.Timeout(TRANSFER_TIMEOUT, connect=CONNECT_TIMEOUT)
        try:
            async with self._http.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise api_error(response)
                async for chunk in response.aiter_bytes():
                    sink.write(chunk)
                return response.headers
        except httpx.TransportError as exc:
            raise CommandFailed(f"download of {url} failed: {describe(exc)}") from exc


def decode_task(event: SseEvent) -> dict[str, Any]:
    """The task carried by a `task` event."""
    try:
        task = json.loads(event.data)
    except ValueError as exc:
        raise CommandFailed(f"the relay sent an event that is not JSON: {exc}") from exc
    if not isinstance(task, dict) or not isinstance(task.get("id"), str):
        raise CommandFailed("the relay sent an event without a task")
    return task
