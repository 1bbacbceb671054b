"""The public address GrsAI's callbacks come back to, as it changes while the relay runs.

Without a tunnel it is PUBLIC_BASE_URL and never changes. With one, the tunnel's thread reports
each change (a new URL, the tunnel down, the tunnel back) here; the app's event loop hears of it
through `subscribe`, and new tasks read `url` on every submit: while the tunnel is down they are
submitted in poll mode, since a callback URL nobody can reach would only delay their results.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

Listener = Callable[["Change"], None]


@dataclass(frozen=True, slots=True)
class Change:
    """One change of the public address: `url` is None while it is down."""

    url: str | None
    previous: str | None
    reason: str = ""

    @property
    def lost(self) -> bool:
        """Callbacks sent to the previous address can no longer arrive (down, or moved)."""
        return self.previous is not None and self.url != self.previous


class PublicAddress:
    """The current public base URL (None: down, or never had one) and who wants to know.

    Thread-safe: a tunnel's thread calls `set`; listeners run on the loop they subscribed from.
    """

    def __init__(self, url: str | None = None, *, tunnel: str | None = None) -> None:
        self._url = url
        self._last = url
        self.tunnel = tunnel  # "ngrok", "cloudflared", or None for a fixed PUBLIC_BASE_URL
        self.reason = ""
        self._lock = threading.Lock()
        self._listeners: list[tuple[asyncio.AbstractEventLoop, Listener]] = []

    @property
    def url(self) -> str | None:
        """Where GrsAI reaches us now; None while the tunnel is down (or with no public URL)."""
        return self._url

    @property
    def base(self) -> str:
        """The latest public URL, even while the tunnel is down ("" if there never was one):
        the base of the absolute links in answers."""
        return self._last or ""

    def set(self, url: str | None, reason: str = "") -> None:
        """Record a change (from any thread) and tell every listener on its own loop."""
        with self._lock:
            previous = self._url
            if url == previous:
                return
            self._url, self.reason = url, reason
            if url is not None:
                self._last = url
            listeners = list(self._listeners)
        change = Change(url, previous, reason)
        for loop, listener in listeners:
            if not loop.is_closed():
                loop.call_soon_threadsafe(listener, change)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` on the running loop at each change; return the unsubscribe call."""
        entry = (asyncio.get_running_loop(), listener)
        with self._lock:
            self._listeners.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._listeners:
                    self._listeners.remove(entry)

        return unsubscribe
