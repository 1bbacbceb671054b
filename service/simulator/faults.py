"""Fault injection: `[sim:NAME]` / `[sim:NAME=VALUE]` directives in the prompt, plus global rates.

Directives (several may appear anywhere in the prompt; names are case-insensitive):

    fail=output_moderation|input_moderation|error   task ends `failed` with that reason
    violation                                       task ends with status `violation`
    reject                                          submit answers code -1 "insufficient credits"
    http=STATUS                                     submit answers that HTTP status (400-599)
    delay=SECONDS                                   wait before the first progress update
    duplicate                                       every callback is sent twice
    reorder                                         callbacks are sent shuffled
    drop | drop=all | drop=final                    no callbacks / progress ones only; a
                                                    stream ends after its first frame /
                                                    before its final one
    late=SECONDS                                    callbacks are sent SECONDS after the end
    pollmiss=SECONDS                                polls answer -22 that long after submit
    slow=SECONDS                                    the submit answer itself is delayed
                                                    (before the task exists)
    slowack=SECONDS                                 the task is created and runs, but the
                                                    submit answer comes SECONDS later (a
                                                    client may give up, or die, after GrsAI
                                                    accepted the task and before it learnt
                                                    the id)
    submitfault=html|truncated|close|500|429        the submit answer is broken (see `wire`):
                                                    html (502 page), 500 and 429 create no
                                                    task; truncated (half a JSON body) and
                                                    close (connection dropped, no answer)
                                                    create the task all the same
    pollfault=KIND | pollfault=KIND:N               the first N (default 2) polls of the task
                                                    answer KIND instead: a `wire` fault, or
                                                    slow (wait `poll_slow_seconds`, then
                                                    answer normally)
    stream=sse|json|bare                            stream quirks: `data:` lines (default),
                                                    the same as application/json, or bare
                                                    JSON lines without `data: `
    unwrapped                                       polls answer the bare task object
    corrupt=N                                       the first N downloads of each result
                                                    file have flipped bytes (same length)
    truncate=N                                      the first N downloads of each result
                                                    file stop halfway (full Content-Length)
    videomb=MB                                      video results are valid MP4s of MB MiB

An unknown name or a bad value is answered as a submit error, so typos do not pass silently.

Global rates (`SimulatorConfig`) throw the same faults at random, from one seeded generator:
`fail_rate`, `reject_rate`, `duplicate_rate`, `reorder_rate`, `drop_rate`, `late_rate`
(+ `late_delay`), `poll_miss_seconds`, `slowack_rate` (+ `slowack_seconds`), `submit_fault_rate`
(a random wire fault per submit) and `poll_fault_rate` (each poll, independently, answers a
random wire fault; drawn by `PollFaultDice` from its own seeded generator, so the number of polls
never shifts the per-task dice).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from http import HTTPStatus
from typing import Any, Literal

from service.simulator.config import SimulatorConfig
from service.simulator.errors import BadRequest
from service.simulator.wire import WIRE_FAULTS, WireFault

FAILURE_REASONS = ("output_moderation", "input_moderation", "error")
DropMode = Literal["none", "all", "final"]
StreamStyle = Literal["sse", "json", "bare"]
PollFaultKind = Literal["html", "truncated", "close", "500", "429", "slow"]
POLL_FAULTS: tuple[PollFaultKind, ...] = (*WIRE_FAULTS, "slow")
DEFAULT_POLL_FAULT_COUNT = 2
_DIRECTIVE = re.compile(r"\[sim:([a-z_]+)(?:=([^\]]*))?\]", re.IGNORECASE)


class DirectiveError(BadRequest):
    """A `[sim:...]` directive that cannot be understood."""


@dataclass(frozen=True)
class PollFault:
    """`[sim:pollfault=KIND:N]`: the first `count` polls of a task answer `kind`."""

    kind: PollFaultKind
    count: int = DEFAULT_POLL_FAULT_COUNT


@dataclass(frozen=True)
class Faults:
    """The faults applied to one task (from directives and from the global dice)."""

    fail: str | None = None
    violation: bool = False
    reject: bool = False
    http_status: int | None = None
    delay: float = 0.0
    duplicate: bool = False
    reorder: bool = False
    drop: DropMode = "none"
    late: float = 0.0
    pollmiss: float = 0.0
    slow: float = 0.0
    slowack: float = 0.0
    submit_fault: WireFault | None = None
    poll_fault: PollFault | None = None
    stream: StreamStyle = "sse"
    unwrapped: bool = False
    corrupt: int = 0
    truncate: int = 0
    videomb: float = 0.0
    directives: tuple[str, ...] = ()  # as written in the prompt, e.g. "fail=error"
    rolled: tuple[str, ...] = ()  # faults chosen by the global rates

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view for the admin endpoints."""
        out = asdict(self)
        out["directives"], out["rolled"] = list(self.directives), list(self.rolled)
        return out


def _flag(name: str, value: str | None) -> bool:
    if value is not None:
        raise DirectiveError(f"simulator directive [sim:{name}] takes no value")
    return True


def _seconds(name: str, value: str | None) -> float:
    try:
        seconds = float(value or "")
    except ValueError:
        seconds = -1.0
    if not (math.isfinite(seconds) and seconds >= 0):
        raise DirectiveError(f"simulator directive [sim:{name}=SECONDS] needs seconds >= 0")
    return seconds


def _fail(name: str, value: str | None) -> str:
    if value not in FAILURE_REASONS:
        raise DirectiveError(f"[sim:fail=...] takes one of {', '.join(FAILURE_REASONS)}")
    return value


def _http(name: str, value: str | None) -> int:
    try:
        status = int(value or "")
        HTTPStatus(status)
    except ValueError:
        status = 0
    if not 400 <= status <= 599:
        raise DirectiveError("[sim:http=STATUS] takes a known HTTP status from 400 to 599")
    return status


def _count(name: str, value: str | None) -> int:
    if value is None or not value.isdigit() or int(value) > 1000:
        raise DirectiveError(f"[sim:{name}=N] takes a count from 0 to 1000")
    return int(value)


def _megabytes(name: str, value: str | None) -> float:
    size = _seconds(name, value)
    if size > 2048:
        raise DirectiveError(f"[sim:{name}=MB] takes at most 2048 MiB")
    return size


def _drop(name: str, value: str | None) -> DropMode:
    if value is None or value == "all":
        return "all"
    if value == "final":
        return "final"
    raise DirectiveError("[sim:drop] takes no value, =all or =final")


def _stream(name: str, value: str | None) -> StreamStyle:
    styles: dict[str | None, StreamStyle] = {"sse": "sse", "json": "json", "bare": "bare"}
    if value in styles:
        return styles[value]
    raise DirectiveError("[sim:stream=...] takes sse, json or bare")


def _wire_fault(name: str, value: str | None) -> WireFault:
    for kind in WIRE_FAULTS:
        if value == kind:
            return kind
    raise DirectiveError(f"[sim:{name}=...] takes one of {', '.join(WIRE_FAULTS)}")


def _poll_fault(name: str, value: str | None) -> PollFault:
    kind_text, sep, count_text = (value or "").partition(":")
    kind = next((k for k in POLL_FAULTS if k == kind_text), None)
    count = int(count_text) if count_text.isdigit() else -1
    if kind is None or (sep and count < 1):
        kinds = "|".join(POLL_FAULTS)
        raise DirectiveError(f"[sim:{name}=KIND] or [sim:{name}=KIND:N] takes KIND {kinds}, N >= 1")
    return PollFault(kind, count) if sep else PollFault(kind)


_PARSERS: dict[str, tuple[str, Callable[[str, str | None], Any]]] = {
    "fail": ("fail", _fail),
    "violation": ("violation", _flag),
    "reject": ("reject", _flag),
    "http": ("http_status", _http),
    "delay": ("delay", _seconds),
    "duplicate": ("duplicate", _flag),
    "reorder": ("reorder", _flag),
    "drop": ("drop", _drop),
    "late": ("late", _seconds),
    "pollmiss": ("pollmiss", _seconds),
    "slow": ("slow", _seconds),
    "slowack": ("slowack", _seconds),
    "submitfault": ("submit_fault", _wire_fault),
    "pollfault": ("poll_fault", _poll_fault),
    "stream": ("stream", _stream),
    "unwrapped": ("unwrapped", _flag),
    "corrupt": ("corrupt", _count),
    "truncate": ("truncate", _count),
    "videomb": ("videomb", _megabytes),
}


def parse_directives(prompt: str) -> Faults:
    """The faults asked for by `[sim:...]` directives in a prompt."""
    faults = Faults()
    seen: list[str] = []
    for match in _DIRECTIVE.finditer(prompt):
        name, value = match[1].lower(), match[2]
        if name not in _PARSERS:
            known = ", ".join(sorted(_PARSERS))
            raise DirectiveError(f"unknown simulator directive [sim:{name}] (known: {known})")
        field_name, parse = _PARSERS[name]
        value = value.strip().lower() if value is not None else None
        faults = replace(faults, **{field_name: parse(name, value)})
        seen.append(name if value is None else f"{name}={value}")
    return replace(faults, directives=tuple(seen))


def roll_faults(faults: Faults, config: SimulatorConfig, rng: random.Random) -> Faults:
    """Add the faults chosen by the config's global rates; directives keep precedence.

    Every die is thrown for every task, so a seed gives the same sequence whatever the prompts.
    """
    dice = {
        name: rng.random() < rate
        for name, rate in (
            ("fail", config.fail_rate),
            ("reject", config.reject_rate),
            ("duplicate", config.duplicate_rate),
            ("reorder", config.reorder_rate),
            ("drop", config.drop_rate),
            ("late", config.late_rate),
            ("slowack", config.slowack_rate),
            ("submit_fault", config.submit_fault_rate),
        )
    }
    reason = rng.choice(FAILURE_REASONS)
    wire_fault = rng.choice(WIRE_FAULTS)
    changes: dict[str, Any] = {}
    if dice["fail"] and faults.fail is None and not faults.violation:
        changes["fail"] = reason
    if dice["reject"] and not faults.reject:
        changes["reject"] = True
    if dice["duplicate"] and not faults.duplicate:
        changes["duplicate"] = True
    if dice["reorder"] and not faults.reorder:
        changes["reorder"] = True
    if dice["drop"] and faults.drop == "none":
        changes["drop"] = "all"
    if dice["late"] and "late" not in _names(faults.directives):
        changes["late"] = config.late_delay
    if dice["slowack"] and "slowack" not in _names(faults.directives):
        changes["slowack"] = config.slowack_seconds
    if dice["submit_fault"] and faults.submit_fault is None:
        changes["submit_fault"] = wire_fault
    if "pollmiss" not in _names(faults.directives):
        changes["pollmiss"] = config.poll_miss_seconds
    rolled = tuple(k for k in changes if k != "pollmiss")
    return replace(faults, **changes, rolled=rolled)


class PollFaultDice:
    """Decides which polls break: a task's `pollfault` directive, else `poll_fault_rate`."""

    def __init__(self, config: SimulatorConfig, seed: int | None) -> None:
        self._rate = config.poll_fault_rate
        # Its own generator: how often a client polls must not change the per-task dice.
        self._rng = random.Random(None if seed is None else f"poll-faults/{seed}")

    def roll(self, faults: Faults | None, polls_so_far: int) -> PollFaultKind | None:
        """The fault for the next poll of a task (`faults` None: an id nobody knows)."""
        hit, kind = self._rng.random() < self._rate, self._rng.choice(WIRE_FAULTS)
        planned = faults.poll_fault if faults is not None else None
        if planned is not None and polls_so_far < planned.count:
            return planned.kind
        return kind if hit else None


def _names(directives: tuple[str, ...]) -> set[str]:
    return {d.partition("=")[0] for d in directives}
