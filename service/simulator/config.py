"""The simulator's settings: one frozen value, buildable from command-line arguments."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

_DEST_PREFIX = "simulator_"


def _setting(default: Any, help_text: str, kind: Callable[[str], Any]) -> Any:
    """Declare a config field together with its command-line help and parser."""
    return field(default=default, metadata={"help": help_text, "kind": kind})


def _rate(help_text: str) -> Any:
    return _setting(0.0, help_text, float)


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated GrsAI API behaves; every field has a usable default."""

    api_key: str | None = _setting(
        None, "require exactly this Bearer key (default: any key starting with sk-)", str
    )
    step_interval: float = _setting(1.0, "seconds between progress updates", float)
    progress_steps: int = _setting(3, "running/progress updates before the final one", int)
    url_ttl: float = _setting(7200.0, "seconds a result URL stays valid after the task ends", float)
    callback_retries: int = _setting(2, "re-POSTs of a callback the receiver did not take", int)
    callback_backoff: float = _setting(0.5, "seconds before the first callback retry", float)
    callback_timeout: float = _setting(5.0, "seconds allowed for one callback POST", float)
    fail_rate: float = _rate("share of tasks that end failed")
    reject_rate: float = _rate("share of submits answered 'insufficient credits'")
    duplicate_rate: float = _rate("share of tasks whose callbacks are all sent twice")
    reorder_rate: float = _rate("share of tasks whose callbacks are sent shuffled")
    drop_rate: float = _rate("share of tasks that send no callback at all")
    late_rate: float = _rate("share of tasks whose callbacks come --late-delay after the end")
    late_delay: float = _setting(5.0, "seconds a late task's callbacks wait after the end", float)
    poll_miss_seconds: float = _setting(
        0.0, "seconds a new task answers -22 (not found) to polls", float
    )
    slowack_rate: float = _rate("share of submits answered --slowack-seconds after the task began")
    slowack_seconds: float = _setting(
        3.0, "seconds a slow-ack submit answer waits after the task was created", float
    )
    submit_fault_rate: float = _rate(
        "share of submits answered by a random broken answer (html, truncated, close, 500, 429)"
    )
    poll_fault_rate: float = _rate(
        "share of polls answered by a random broken answer (html, truncated, close, 500, 429)"
    )
    poll_slow_seconds: float = _setting(
        3.0, "seconds a [sim:pollfault=slow] poll waits before answering", float
    )
    public_base_url: str | None = _setting(
        None, "base URL for result file links (default: the request's own)", str
    )
    credits: int = _setting(100_000, "credits reported by getAPIKeyCredits", int)
    seed: int | None = _setting(None, "seed for the fault dice and task ids", int)

    def __post_init__(self) -> None:
        for name in (
            "fail_rate",
            "reject_rate",
            "duplicate_rate",
            "reorder_rate",
            "drop_rate",
            "late_rate",
            "slowack_rate",
            "submit_fault_rate",
            "poll_fault_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        for name in (
            "step_interval",
            "url_ttl",
            "callback_backoff",
            "late_delay",
            "poll_miss_seconds",
            "slowack_seconds",
            "poll_slow_seconds",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.callback_timeout <= 0:
            raise ValueError("callback_timeout must be positive")
        if self.progress_steps < 0 or self.callback_retries < 0:
            raise ValueError("progress_steps and callback_retries must not be negative")

    @classmethod
    def add_cli_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add one `--option` per field (e.g. `--api-key`, `--fail-rate`) to `parser`."""
        group = parser.add_argument_group("GrsAI simulator")
        for f in fields(cls):
            group.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=_DEST_PREFIX + f.name,
                type=f.metadata["kind"],
                default=argparse.SUPPRESS,
                help=f"{f.metadata['help']} (default: {f.default})",
            )

    @classmethod
    def from_cli(cls, ns: argparse.Namespace) -> SimulatorConfig:
        """Build a config from arguments parsed with `add_cli_arguments`; absent ones default."""
        given = {
            f.name: getattr(ns, _DEST_PREFIX + f.name)
            for f in fields(cls)
            if hasattr(ns, _DEST_PREFIX + f.name)
        }
        return cls(**given)
