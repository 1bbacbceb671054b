"""Log lines are formatted and written by a listener thread, never by the code that logs."""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import threading
from collections.abc import Iterator

import pytest

from service import logs, logwriter
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


def test_a_batch_is_written_in_whole_lines_of_at_most_a_pipe_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each system call carries whole lines and at most 4096 bytes (a longer line alone), so a
    line printed to stdout into the same pipe never lands inside a log line."""
    reader, writer = os.pipe()
    calls: list[bytes] = []
    real_write = os.write

    def recording(fd: int, data: bytes | memoryview) -> int:
        calls.append(bytes(data))
        return real_write(fd, data)

    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    with os.fdopen(writer, "w") as stream:
        batch_writer = logwriter.BatchWriter(records, handler, stream)
        lines = [f"line {n} " + "x" * (n * 37 % 900) for n in range(60)] + ["y" * 6000]
        batch = [logging.makeLogRecord({"msg": line}) for line in lines]
        monkeypatch.setattr(os, "write", recording)
        batch_writer._write(batch)
        monkeypatch.undo()
    with os.fdopen(reader, "rb") as out:
        assert out.read().decode().splitlines() == lines
    assert len(calls) > 2
    assert all(call.endswith(b"\n") for call in calls)
    assert all(len(call) <= 4096 or call.count(b"\n") == 1 for call in calls)
