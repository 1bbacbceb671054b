"""Test doubles shared by the test packages (the service holds none)."""

from __future__ import annotations


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
