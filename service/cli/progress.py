"""How a followed task shows its progress: one redrawn bar on a terminal, else a line per change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

TERMINAL = ("succeeded", "failed")
BAR_MIN = 10
BAR_MAX = 40
TAIL_ROOM = 45  # the bar keeps its length while the words after it change


def copying(task: dict[str, Any]) -> int:
    """How many result files the relay is still copying."""
    return sum(
        1
        for r in task.get("results") or []
        if isinstance(r, dict) and (r.get("asset") or {}).get("status") == "pending"
    )


def settled(task: dict[str, Any]) -> bool:
    """Final, and no result file still being copied: the task will not change again."""
    return task.get("status") in TERMINAL and copying(task) == 0


def percent(task: dict[str, Any]) -> int:
    """The task's progress, 0-100 (100 once it succeeded)."""
    if task.get("status") == "succeeded":
        return 100
    value = task.get("progress")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, min(100, int(value)))


def state(task: dict[str, Any]) -> str:
    """The status in words, with the copies still under way."""
    status = str(task.get("status") or "unknown")
    pending = copying(task)
    if pending:
        return f"{status}, copying {pending} result file{'s' if pending > 1 else ''}"
    return status


def line(task: dict[str, Any]) -> str:
    """The plain one-line report of a task's state (a log, a pipe)."""
    return f"{task.get('id')} {state(task)} {percent(task)}%"


def bar(task: dict[str, Any], width: int, elapsed: float) -> str:
    """A bar that fits `width` columns: `[#####.....]  45%  running  12s`."""
    tail = f" {percent(task):3d}%  {state(task)}  {elapsed:.0f}s"
    room = max(BAR_MIN, min(BAR_MAX, width - TAIL_ROOM))
    done = room * percent(task) // 100
    text = f"[{'#' * done}{'.' * (room - done)}]{tail}"
    return text[: max(width - 1, 1)]


class Progress:
    """Shows each new state of a task on `out`: a bar redrawn in place when `out` is a terminal,
    else one line whenever the status or progress changes."""

    def __init__(
        self,
        out: TextIO,
        clock: Callable[[], float],
        *,
        tty: bool | None = None,
        columns: Callable[[], int] = lambda: 80,
    ) -> None:
        self._out = out
        self._clock = clock
        self._started = clock()
        self._tty = out.isatty() if tty is None else tty
        self._columns = columns
        self._last = ""
        self._drawn = False

    def show(self, task: dict[str, Any]) -> None:
        """Report `task`'s state (a repeat of the last one prints nothing in line mode)."""
        if self._tty:
            text = bar(task, self._columns(), self._clock() - self._started)
            self._out.write("\r" + text + " " * max(0, len(self._last) - len(text)))
            self._last = text
            self._drawn = True
        else:
            text = line(task)
            if text == self._last:
                return
            self._out.write(text + "\n")
            self._last = text
        self._out.flush()

    def say(self, message: str) -> None:
        """A message between states (a reconnect): on its own line, the bar redrawn after."""
        self.end()
        self._out.write(message + "\n")
        self._out.flush()

    def end(self) -> None:
        """Finish the bar's line, if one is drawn."""
        if self._drawn:
            self._out.write("\n")
            self._out.flush()
            self._drawn = False
            self._last = ""
