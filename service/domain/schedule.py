"""When to poll GrsAI for a task: after submit, after news, after each poll."""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.records import Task


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """Timing rules for the poller (all seconds)."""

    first_delay: float = 3.0
    max_interval: float = 60.0
    backoff: float = 1.5
    silence: float = 60.0
    not_found_grace: float = 60.0
    submit_recovery_grace: float = 300.0
    max_age: float = 6 * 3600.0

    def after_submit(self, task: Task, now: float) -> float:
        """First poll: soon in poll mode, after a silence window in callback and stream mode
        (news arrives by itself there; the poll is the fallback)."""
        return now + (self.first_delay if task.mode == "poll" else self.silence)

    def after_news(self, mode: str, scheduled: float | None, now: float) -> float | None:
        """Next poll of a running task after a callback (or stream frame) told us something new.

        In callback and stream mode the poll waits for a silence window after the news. A poll
        already due between half a window and a whole window from now is kept: moving it on every
        callback would rewrite the task's entry in the due-poll index each time, for nothing.
        So a task whose callbacks stop is polled between half a window and a whole window
        after the last one.
        """
        if mode == "poll":
            return scheduled
        if scheduled is not None and now + self.silence / 2 <= scheduled <= now + self.silence:
            return scheduled
        return now + self.silence

    def after_poll(self, attempts: int, now: float, spread: float = 0.5) -> float:
        """Backoff after `attempts` unfinished polls, with ±20% jitter (`spread` in [0, 1))."""
        delay = min(self.max_interval, self.first_delay * (self.backoff ** min(attempts, 64)))
        return now + max(delay * (0.8 + 0.4 * spread), 0.05)
