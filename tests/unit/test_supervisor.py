"""`serve --workers N`: what the parent does when a serving process ends.

The processes themselves are exercised end to end on PostgreSQL (`tests/e2e/test_workers.py`);
here the policy alone, on stand-ins for ended children.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from service.cli.supervisor import BACKOFF_MAX, Child, Supervisor, describe_exit
from service.server import STARTUP_FAILURE
from service.settings import Settings


@pytest.fixture(name="supervisor")
def _supervisor() -> Iterator[Supervisor]:
    """A supervisor of two workers that has started none."""
    with socket.socket() as sock:
        yield Supervisor(Settings(), False, sock, 2)


def ended(code: int, served: bool, slot: int = 0) -> Child:
    """A child that has exited with `code`, having served or not."""
    serving = threading.Event()
    if served:
        serving.set()
    process = SimpleNamespace(exitcode=code, pid=4242)
    return Child(slot, cast(Any, process), cast(Any, serving))


def test_a_child_that_served_is_replaced_at_once(supervisor: Supervisor) -> None:
    """Killed, crashed or exited: a child that had served is replaced without delay."""
    supervisor.came_up = True
    for code in (-9, 1, 0, STARTUP_FAILURE):
        assert supervisor._replacement_delay(ended(code, served=True)) == 0.0


def test_the_app_failing_to_start_before_any_child_served_stops_the_service(
    supervisor: Supervisor,
) -> None:
    """Exit 3 (start-up failed) while no child has ever served: stop, as one process would."""
    assert supervisor._replacement_delay(ended(STARTUP_FAILURE, served=False)) is None


def test_children_that_never_come_up_are_replaced_with_a_growing_delay(
    supervisor: Supervisor,
) -> None:
    """Once the service has served, failed starts back off 0.5, 1, 2 ... up to the maximum;
    a child that serves again resets the backoff."""
    supervisor.came_up = True
    delays = [supervisor._replacement_delay(ended(STARTUP_FAILURE, False)) for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, BACKOFF_MAX, BACKOFF_MAX, BACKOFF_MAX]
    assert supervisor._replacement_delay(ended(-9, served=True)) == 0.0
    assert supervisor._replacement_delay(ended(1, served=False)) == 0.5


def test_exits_are_described_for_operators() -> None:
    """A signal by name, else the exit code."""
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(-15) == "was killed by SIGTERM"
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(None) == "is still running"
