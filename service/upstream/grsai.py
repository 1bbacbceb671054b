"""The GrsAI API client: submit a task (answered at once, or streamed), poll a task. Maps every
failure onto the error tree."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from service.domain.errors import (
    Malformed,
    UpstreamError,
    UpstreamOutcomeUnknown,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from service.domain.observation import Observation, parse_task_object, unwrap_poll_answer
from service.domain.strict_json import loads_strict
from service.metrics import Metrics
from service.upstream.frames import ENVELOPE_PEEK, StreamFrame, message, read_at_most, stream_frames
from service.upstream.httppool import WatchedClient

NOT_FOUND_CODE = -22
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_MAX_ANSWER = 4 * 1024 * 1024


Sleep = Callable[[float], Awaitable[None]]


class GrsaiClient:
    """Talks to one GrsAI host with one API key over its own `WatchedClient`.

    A submit is retried only when it surely did not reach GrsAI (the connection was never
    made), with exponential backoff and ±20% jitter; anything else could create a second task.
    """

    def __init__(
        self,
        http: WatchedClient,
        base_url: str,
        api_key: str,
        *,
        connect_retries: int = 2,
        retry_delay: float = 0.25,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        metrics: Metrics | None = None,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._connect_retries = connect_retries
        self._retry_delay = retry_delay
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._metrics = metrics
        self._reachability: tuple[float, dict[str, str]] | None = None

    async def _post_retrying(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST, retrying only failures that prove the request never left."""
        for attempt in range(self._connect_retries + 1):
            try:
                return await self._post(path, body, None)
            except UpstreamUnavailable:
                if attempt == self._connect_retries:
                    raise
                jitter = 1 + self._rng.uniform(-0.2, 0.2)
                await self._sleep(self._retry_delay * (2**attempt) * jitter)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, path: str, body: dict[str, Any], within: float | None) -> httpx.Response:
        operation = "poll" if path == "/v1/draw/result" else "submit"
        started = time.perf_counter()
        try:
            response = await self._send(path, body, within)
        except UpstreamError as exc:
            self._observe(operation, started, exc.code)
            raise
        self._observe(
            operation,
            started,
            None if response.status_code < 400 else f"http_{response.status_code}",
        )
        return response

    def _observe(self, operation: str, started: float, error: str | None) -> None:
        if self._metrics is None:
            return
        self._metrics.upstream_seconds.labels(operation).observe(time.perf_counter() - started)
        if error is not None:
            self._metrics.upstream_errors.labels(operation, error).inc()

    async def _send(self, path: str, body: dict[str, Any], within: float | None) -> httpx.Response:
        url = self._base_url + path
        try:
            return await self._http.request(
                "POST", url, json=body, headers=self._headers, timeout=within
            )
        except _NOT_SENT as exc:
            raise UpstreamUnavailable(f"GrsAI could not be reached: {exc!r}") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"GrsAI did not answer in time: {exc!r}") from exc
        except httpx.HTTPError as exc:  # connection reset, protocol error after sending
            raise UpstreamTimeout(f"GrsAI connection failed mid-request: {exc!r}") from exc

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        if len(response.content) > _MAX_ANSWER:
            raise UpstreamProtocolError(
                "GrsAI answer is too large", http_status=response.status_code
            )
        try:
            return loads_strict(response.content)
        except Malformed as exc:
            raise UpstreamProtocolError(
                f"GrsAI answered HTTP {response.status_code} with unusable JSON: {exc.message}",
                http_status=response.status_code,
            ) from exc

    async def submit(self, path: str, body: dict[str, Any]) -> str:
        """Submit a task in callback or poll mode; return GrsAI's task id."""
        response = await self._post_retrying(path, body)
        if response.status_code >= 500:  # a gateway may have passed the task on before failing
            raise UpstreamOutcomeUnknown(
                f"GrsAI answered HTTP {response.status_code}; the task may or may not exist",
                http_status=response.status_code,
            )
        if response.status_code >= 400:
            try:
                payload: Any = json.loads(response.content)
            except ValueError:
                payload = None
            raise UpstreamRejected(
                message(payload, f"GrsAI answered HTTP {response.status_code}"),
                http_status=response.status_code,
            )
        payload = self._json(response)
        if not isinstance(payload, dict):
            raise UpstreamProtocolError("GrsAI submit answer is not a JSON object")
        code = payload.get("code")
        if code != 0:
            raise UpstreamRejected(message(payload, f"GrsAI refused the task (code {code})"))
        data = payload.get("data")
        task_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id or len(task_id) > 128:
            raise UpstreamProtocolError("GrsAI accepted the task but sent no usable task id")
        return task_id

    @contextlib.asynccontextmanager
    async def submit_streaming(
        self, path: str, body: dict[str, Any], *, idle: float
    ) -> AsyncIterator[AsyncIterator[StreamFrame]]:
        """Submit in stream mode (no `webHook`) and yield the answer's frames as they come.

        A refusal before any frame raises like `submit` does; `idle` bounds the wait for each
        chunk (`UpstreamTimeout`); a broken or hostile body ends the frames with an
        `UpstreamError`. Leaving the block closes the connection.
        """
        url = self._base_url + path
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        # identity: a compressed body could inflate past every bound the splitter sets
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
        }
        timeout = httpx.Timeout(idle, connect=self._http.client.timeout.connect)
        started = time.perf_counter()
        try:
            async with self._http.stream(
                "POST", url, content=content, headers=headers, timeout=timeout
            ) as response:
                self._observe("stream", started, None)
                if response.status_code >= 400:
                    await self._refused(response)
                yield stream_frames(response)
        except _NOT_SENT as exc:
            self._observe("stream", started, "unavailable")
            raise UpstreamUnavailable(f"GrsAI could not be reached: {exc!r}") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"GrsAI stream went quiet: {exc!r}") from exc
        except httpx.HTTPError as exc:  # reset, truncated chunk: the stream broke
            raise UpstreamOutcomeUnknown(f"GrsAI stream broke: {exc!r}") from exc

    async def _refused(self, response: httpx.Response) -> None:
        raw = await read_at_most(response, ENVELOPE_PEEK)
        status = response.status_code
        if status >= 500:
            raise UpstreamOutcomeUnknown(
                f"GrsAI answered HTTP {status}; the task may or may not exist", http_status=status
            )
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = None
        raise UpstreamRejected(
            message(payload, f"GrsAI answered HTTP {status}"), http_status=status
        )

    async def reachable(self, now: float, ttl: float = 30.0) -> dict[str, str]:
        """Whether GrsAI answers (a model-status call), cached for `ttl` seconds."""
        if self._reachability is not None and now - self._reachability[0] < ttl:
            return self._reachability[1]
        url = f"{self._base_url}/client/common/getModelStatus"
        try:
            response = await self._http.request(
                "GET", url, params={"model": "nano-banana"}, timeout=5.0
            )
            state = {"status": "ok" if response.status_code < 500 else "failing"}
            if response.status_code >= 500:
                state["error"] = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            state = {"status": "failing", "error": type(exc).__name__}
        self._reachability = (now, state)
        return state

    async def poll(self, upstream_id: str, *, within: float | None = None) -> Observation | None:
        """Ask GrsAI for a task's state; None when GrsAI does not know the id (code -22)."""
        response = await self._post("/v1/draw/result", {"id": upstream_id}, within)
        if response.status_code >= 400:
            raise UpstreamRejected(
                f"GrsAI answered HTTP {response.status_code} to a poll",
                http_status=response.status_code,
            )
        try:
            code, msg, data = unwrap_poll_answer(self._json(response))
            if code == NOT_FOUND_CODE:
                return None
            if code != 0:
                raise UpstreamRejected(msg or f"GrsAI poll failed (code {code})")
            observation = parse_task_object(data)
        except Malformed as exc:
            raise UpstreamProtocolError(f"GrsAI poll answer unreadable: {exc.message}") from exc
        if observation.upstream_id != upstream_id:
            raise UpstreamProtocolError("GrsAI poll answer is for another task id")
        return observation
