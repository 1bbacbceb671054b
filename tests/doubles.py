"""Test doubles shared by the test packages (the service holds none)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


class ManualClock:
    """A clock that only moves when told to (satisfies `service.clock.Clock`)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        """Return the current manual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self._now += seconds


def serving(app: ASGIApp, state: Mapping[str, Any]) -> ASGIApp:
    """`app` as an ASGI server runs it once its lifespan started: every request's scope carries
    a copy of the state the lifespan yielded (httpx's ASGITransport runs no lifespan)."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    return asgi
