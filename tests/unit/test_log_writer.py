"""Log lines are formatted and written by a listener thread, never by the code that logs."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from service import logs
from service.logwriter import Writers

HANG_GUARD = 30.0


class StuckStream(io.StringIO):
    """A stderr whose writes block until released, remembering which thread wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.writers: set[int] = set()

    def write(self, text: str) -> int:
        """Block until released, then keep the text."""
        self.writers.add(threading.get_ident())
        assert self.release.wait(HANG_GUARD)
        return super().write(text)

    def isatty(self) -> bool:
        """Not a terminal: JSON lines."""
        return False


@pytest.fixture
def stuck(monkeypatch: pytest.MonkeyPatch) -> Iterator[StuckStream]:
    """Logging configured onto a stuck stderr; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = StuckStream()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure("info", "auto")
    yield stream
    stream.release.set()
    Writers.stop()
    root.handlers[:], root.level = saved


def test_logging_returns_while_the_output_is_stuck(stuck: StuckStream) -> None:
    """A record logged while stderr blocks is queued; the caller goes on at once."""
    log = logging.getLogger("grsai_relay.test")
    token = logs.REQUEST_ID.set("req-1")
    try:
        for n in range(3):
            log.info("line %d grk_secretsecret", n)  # returns although every write blocks
    finally:
        logs.REQUEST_ID.reset(token)
    stuck.release.set()
    Writers.stop()  # drains the queue
    lines = [json.loads(line) for line in stuck.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == [f"line {n} grk_***" for n in range(3)]
    assert {line["request_id"] for line in lines} == {"req-1"}
    assert threading.get_ident() not in stuck.writers
