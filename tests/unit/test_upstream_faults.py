"""The GrsAI client under every upstream fault: bounded, retried only where safe, mapped."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from service.domain.errors import (
    UpstreamError,
    UpstreamOutcomeUnknown,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from service.upstream.clients import watched_client
from service.upstream.grsai import GrsaiClient

Handler = Callable[[httpx.Request], httpx.Response]
TASK = {"id": "7-abc", "status": "running", "progress": 40, "results": None}


class Upstream:
    """A scripted GrsAI: each call takes the next behaviour; the last one repeats."""

    def __init__(self, *behaviours: Handler) -> None:
        self.behaviours = list(behaviours)
        self.calls = 0
        self.slept: list[float] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        behaviour = self.behaviours[min(self.calls, len(self.behaviours) - 1)]
        self.calls += 1
        return behaviour(request)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def client(self) -> GrsaiClient:
        http = watched_client(
            "grsai",
            capacity=4,
            timeout=httpx.Timeout(5.0),
            transport=httpx.MockTransport(self.handle),
        )
        return GrsaiClient(http, "http://grsai.test", "sk-x", sleep=self.sleep)


def raises(exc: type[Exception]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("injected", request=request)  # type: ignore[call-arg]  # httpx errors take request=

    return handler


def answer(status: int, body: bytes, content_type: str = "application/json") -> Handler:
    return lambda request: httpx.Response(
        status, content=body, headers={"content-type": content_type}
    )


ACCEPTED = answer(200, b'{"code":0,"msg":"success","data":{"id":"7-abc"}}')
HTML = answer(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
TRUNCATED = answer(200, b'{"code":0,"msg":"success","data":{"id":"7-a')
POLL_OK = answer(200, json.dumps({"code": 0, "msg": "success", "data": TASK}).encode())


async def test_submit_retries_connect_failures_then_succeeds() -> None:
    """A connection never made is retried with backoff; the task is created once."""
    upstream = Upstream(raises(httpx.ConnectError), raises(httpx.ConnectError), ACCEPTED)
    assert await upstream.client().submit("/v1/draw/nano-banana", {}) == "7-abc"
    assert upstream.calls == 3
    assert len(upstream.slept) == 2
    assert upstream.slept[1] > upstream.slept[0] > 0


async def test_submit_gives_up_on_persistent_connect_failure() -> None:
    """After the bounded retries, an unreachable GrsAI is UpstreamUnavailable (503)."""
    upstream = Upstream(raises(httpx.ConnectError))
    with pytest.raises(UpstreamUnavailable):
        await upstream.client().submit("/v1/draw/nano-banana", {})
    assert upstream.calls == 3


@pytest.mark.parametrize(
    "fault", [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteTimeout]
)
async def test_submit_is_never_retried_once_it_may_have_arrived(
    fault: type[httpx.HTTPError],
) -> None:
    """Timeouts and dropped connections after sending are not retried (no second task)."""
    upstream = Upstream(raises(fault), ACCEPTED)
    with pytest.raises(UpstreamTimeout):
        await upstream.client().submit("/v1/draw/nano-banana", {})
    assert upstream.calls == 1


@pytest.mark.parametrize(
    ("behaviour", "error", "status"),
    [
        (HTML, UpstreamOutcomeUnknown, 503),
        (answer(500, b'{"code":-1,"msg":"boom"}'), UpstreamOutcomeUnknown, 503),
        (answer(429, b'{"code":-1,"msg":"rate limited"}'), UpstreamRejected, 502),
        (answer(401, b""), UpstreamRejected, 502),
        (TRUNCATED, UpstreamProtocolError, 502),
        (answer(200, b"[]"), UpstreamProtocolError, 502),
        (answer(200, b'{"code":0,"data":{}}'), UpstreamProtocolError, 502),
        (
            answer(200, b'{"code":-1,"msg":"insufficient credits","data":null}'),
            UpstreamRejected,
            502,
        ),
    ],
)
async def test_submit_answers_we_cannot_use_are_clear_errors(
    behaviour: Handler, error: type[UpstreamError], status: int
) -> None:
    """HTML pages, 5xx, 429, truncated or wrong JSON map to a precise error, never a crash."""
    upstream = Upstream(behaviour)
    with pytest.raises(error) as caught:
        await upstream.client().submit("/v1/draw/nano-banana", {})
    assert caught.value.status == status
    assert caught.value.message
    assert upstream.calls == 1


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (HTML, UpstreamRejected),
        (TRUNCATED, UpstreamProtocolError),
        (
            answer(200, b'{"code":0,"data":{"id":"other","status":"running"}}'),
            UpstreamProtocolError,
        ),
        (answer(200, b'{"code":0,"data":{"id":"7-abc","status":"weird"}}'), UpstreamProtocolError),
        (answer(503, b"Service Unavailable", "text/plain"), UpstreamRejected),
        (raises(httpx.RemoteProtocolError), UpstreamTimeout),
        (raises(httpx.ReadTimeout), UpstreamTimeout),
        (raises(httpx.ConnectError), UpstreamUnavailable),
    ],
)
async def test_poll_faults_map_to_upstream_errors(
    behaviour: Handler, error: type[UpstreamError]
) -> None:
    """Every poll fault is an UpstreamError the poller turns into a backed-off retry."""
    with pytest.raises(error):
        await Upstream(behaviour).client().poll("7-abc")


async def test_poll_reads_wrapped_and_bare_answers_and_minus_22() -> None:
    """Wrapped and unwrapped poll answers both parse; code -22 means unknown (None)."""
    bare = answer(200, json.dumps(TASK).encode())
    missing = answer(200, b'{"code":-22,"msg":"task not found","data":null}')
    assert (await Upstream(POLL_OK).client().poll("7-abc")) is not None
    observed = await Upstream(bare).client().poll("7-abc")
    assert observed is not None
    assert observed.progress == 40
    assert await Upstream(missing).client().poll("7-abc") is None
