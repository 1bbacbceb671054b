"""The ngrok tunnel through a double of ngrok's SDK, run by the tunnel thread as `serve` runs it;
and the app's reaction to a public address that drops or moves."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, cast

import pytest

from service.jobs.reach import CallbackHealth, PublicWatch
from service.storage import Storage
from service.tunnel.drivers import TunnelError
from service.tunnel.ngrok import NgrokTunnel
from service.tunnel.public import PublicAddress
from service.tunnel.runner import TunnelThread
from tests.doubles import ManualClock
from tests.unit.conftest import FakeEntropy


class FakeListener:
    """An ngrok listener: a URL, closable."""

    def __init__(self, url: str) -> None:
        self._url, self.closed, self.forwards_to = url, False, ""

    def url(self) -> str:
        """The endpoint's public URL."""
        return self._url

    async def close(self) -> None:
        """Stop listening."""
        self.closed = True


class FakeSdk:
    """The slice of ngrok's SDK the relay uses: SessionBuilder -> Session -> http_endpoint."""

    def __init__(self, url: str = "https://f00d.ngrok.app", refuse: str | None = None) -> None:
        self.url, self.refuse = url, refuse
        self.token = self.reserved = ""
        self.on_disconnect: Callable[[str, str], None] = lambda addr, error: None
        self.on_heartbeat: Callable[[int], None] = lambda latency: None
        self.listener: FakeListener | None = None
        self.session_closed = False

    def SessionBuilder(self) -> FakeSdk:  # the SDK's name
        """Start building a session."""
        return self

    def authtoken(self, token: str) -> FakeSdk:
        """Record the token."""
        self.token = token
        return self

    def handle_disconnection(self, handler: Callable[[str, str], None]) -> FakeSdk:
        """Keep the disconnection handler."""
        self.on_disconnect = handler
        return self

    def handle_heartbeat(self, handler: Callable[[int], None]) -> FakeSdk:
        """Keep the heartbeat handler."""
        self.on_heartbeat = handler
        return self

    async def connect(self) -> FakeSdk:
        """The session (or the SDK's refusal, e.g. a bad token)."""
        if self.refuse:
            raise ValueError(self.refuse)
        return self

    def http_endpoint(self) -> FakeSdk:
        """An HTTP endpoint builder."""
        return self

    def domain(self, name: str) -> FakeSdk:
        """A reserved domain."""
        self.reserved = name
        return self

    async def listen_and_forward(self, url: str) -> FakeListener:
        """Listen, forwarding to `url`."""
        self.listener = FakeListener(self.url)
        self.listener.forwards_to = url
        return self.listener

    async def close(self) -> None:
        """Close the session."""
        self.session_closed = True


def run(tunnel: NgrokTunnel, public: PublicAddress, said: list[str]) -> TunnelThread:
    """The tunnel's thread as `serve` starts it, checking every 10 ms."""
    return TunnelThread(
        tunnel, public, "http://127.0.0.1:8000", start_timeout=5, interval=0.01, say=said.append
    )


def wait_for(condition: Callable[[], bool]) -> None:
    """Until `condition` holds (a hang guard: a second)."""
    done = threading.Event()
    for _ in range(1000):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition never held")


def test_ngrok_tunnel_comes_up_drops_and_comes_back() -> None:
    """The endpoint's URL becomes the public URL; a disconnection is `tunnel down`, the next
    heartbeat `tunnel up`; stopping closes the listener and the session."""
    sdk, public = FakeSdk(), PublicAddress(None, tunnel="ngrok")
    said: list[str] = []
    runner = run(NgrokTunnel(sdk, "tok-1", domain="relay.ngrok.app"), public, said)
    try:
        assert runner.start() == "https://f00d.ngrok.app"
        assert (public.url, sdk.token, sdk.reserved) == (
            "https://f00d.ngrok.app",
            "tok-1",
            "relay.ngrok.app",
        )
        assert sdk.listener is not None
        assert sdk.listener.forwards_to == "http://127.0.0.1:8000"
        sdk.on_disconnect("connect.ngrok-agent.com:443", "connection reset\nby peer")
        wait_for(lambda: public.url is None)
        lost = "ngrok session to connect.ngrok-agent.com:443 lost: connection reset by peer"
        assert said == [f"tunnel down: {lost}"]
        assert public.base == "https://f00d.ngrok.app"  # links keep the last URL
        sdk.on_heartbeat(42)
        wait_for(lambda: public.url == "https://f00d.ngrok.app")
        assert said[-1] == "tunnel up https://f00d.ngrok.app"
    finally:
        runner.stop()
    assert sdk.listener.closed
    assert sdk.session_closed


@pytest.mark.parametrize(
    ("sdk", "token", "message"),
    [
        (FakeSdk(), None, "--tunnel ngrok needs NGROK_AUTHTOKEN"),
        (FakeSdk(refuse="authentication failed: The authtoken you specified is invalid"), "bad",
         "ngrok refused the tunnel: authentication failed"),
        (FakeSdk(url="tcp://0.tcp.ngrok.io:1234"), "tok", "ngrok gave an unusable URL"),
    ],
)  # fmt: skip
def test_ngrok_that_cannot_come_up_is_one_error(
    sdk: FakeSdk, token: str | None, message: str
) -> None:
    """No token, a refused token, a URL that is not https: a TunnelError, the thread ended."""
    public = PublicAddress(None, tunnel="ngrok")
    runner = run(NgrokTunnel(sdk, token), public, [])
    with pytest.raises(TunnelError, match=message.replace("[", r"\[")):
        runner.start()
    assert public.url is None


class SwitchingStorage:
    """The one storage call a public-address change makes."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def switch_to_polling(self, now: float) -> int:
        """Pretend three tasks were switched."""
        self.calls.append(now)
        return 3


async def test_a_lost_address_switches_tasks_and_a_new_one_is_probed() -> None:
    """Down: tasks switch to polling and the poller is kicked; up again: the probe runs and
    `/readyz` reports it; a probe that fails is a warning naming why."""
    public, storage, kicks = (
        PublicAddress("https://a.example", tunnel="ngrok"),
        SwitchingStorage(),
        [],
    )
    probed: list[str] = []

    async def probe(url: str, nonce: str) -> tuple[bool, str]:
        probed.append(url)
        return url != "https://b.example", f"{url} answered"

    watch = PublicWatch(
        public,
        cast(Storage, storage),
        ManualClock(),
        FakeEntropy(),
        on_switched=lambda: kicks.append(1),
        probe=probe,
    )
    watch.start()
    try:
        await _settle()
        assert watch.report() == {
            "status": "ok",
            "url": "https://a.example",
            "tunnel": "ngrok",
            "probe": "ok",
        }
        public.set(None, "gone")
        await _settle()
        assert (len(storage.calls), kicks) == (1, [1])
        assert watch.report() == {"status": "warning", "detail": "the ngrok tunnel is down: gone"}
        public.set("https://b.example")
        await _settle()
        assert probed == ["https://a.example", "https://b.example"]
        report = watch.report()
        assert (report["status"], report["probe"], report["detail"]) == (
            "warning",
            "failed",
            "https://b.example answered",
        )
    finally:
        await watch.stop()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_callback_health_warns_on_silence_until_a_callback_arrives() -> None:
    """Silent callback-mode tasks turn the check into a warning; the next callback clears it."""
    clock = ManualClock()
    health = CallbackHealth(clock)
    assert health.report() == {"status": "ok", "last_callback": "none yet"}
    health.silent("task_1")
    health.silent("task_2")
    report: dict[str, Any] = health.report()
    assert report["status"] == "warning"
    assert report["detail"].startswith(
        "2 callback-mode task(s) got no callback within CALLBACK_SILENCE"
    )
    health.heard()
    assert health.report()["status"] == "ok"
