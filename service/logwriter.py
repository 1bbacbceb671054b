"""Writing log lines off the event loop, in batches.

Code that logs only builds a record and puts it on a queue (`Enqueue`). One writer thread
wakes when records are waiting, formats and writes everything queued in one write, then pauses
briefly so it wakes at most `PAUSE`-ly often: under load it takes the GIL a few dozen times a
second, not once per request. A slow terminal or pipe therefore never stalls a request. The
queue is drained when the writer is stopped, and at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import logging.handlers
import os
import queue
import threading
import time
from contextvars import ContextVar
from typing import IO

PAUSE = 0.05  # seconds between batches: log lines appear within about this
Records = queue.SimpleQueue[logging.LogRecord]
_STOP = logging.makeLogRecord({"msg": "stop"})


class Enqueue(logging.handlers.QueueHandler):
    """Puts records on the queue as they are, stamped with the request id they were made
    under (a context variable the writer thread cannot see). No formatting here."""

    def __init__(self, records: Records, stamp: ContextVar[str | None]):
        super().__init__(records)
        self._stamp = stamp

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Stamp the request id."""
        if getattr(record, "request_id", None) is None:
            record.request_id = self._stamp.get()
        return record


ATOMIC = 4096  # PIPE_BUF on Linux: a write to a pipe up to this size is never split


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class BatchWriter(threading.Thread):
    """The thread that formats queued records with `handler` (its filters and formatter) and
    writes them to `stream`."""

    def __init__(
        self,
        records: queue.SimpleQueue[logging.LogRecord],
        handler: logging.Handler,
        stream: IO[str],
    ) -> None:
        super().__init__(name="log-writer", daemon=True)
        self._records = records
        self._handler = handler
        self._stream = stream

    def run(self) -> None:
        """Write batches until the stop record comes."""
        while True:
            batch = [self._records.get()]
            while len(batch) < 10_000:
                try:
                    batch.append(self._records.get_nowait())
                except queue.Empty:
                    break
            if not self._write(batch):
                return
            time.sleep(PAUSE)

    def _write(self, batch: list[logging.LogRecord]) -> bool:
        lines = []
        going = True
        for record in batch:
            if record is _STOP:
                going = False
                continue
            try:
                if self._handler.filter(record):
                    lines.append(self._handler.format(record) + "\n")
            except Exception:  # one bad record must not silence the rest
                self._handler.handleError(record)
        if lines:
            with contextlib.suppress(OSError, ValueError):  # stderr gone: nothing left to tell
                self._emit(lines)
        return going

    def _emit(self, lines: list[str]) -> None:
        """Write whole lines, at most `ATOMIC` bytes per system call where the stream has a
        file descriptor: a line printed to stdout meanwhile (`ready <url>`, when both go to one
        file or pipe) then lands between two log lines, never inside one."""
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError, AttributeError):  # e.g. a StringIO in tests
            self._stream.write("".join(lines))
            self._stream.flush()
            return
        self._stream.flush()
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            data = line.encode("utf-8", "replace")
            if chunk and size + len(data) > ATOMIC:
                _write_all(fd, b"".join(chunk))
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        _write_all(fd, b"".join(chunk))

    def stop(self) -> None:
        """Write out every queued record, then end the thread."""
        self._records.put(_STOP)
        self.join()


class Writers:
    """The one writer thread of this process (logging itself is process-wide)."""

    current: BatchWriter | None = None
    drained_at_exit = False

    @classmethod
    def replace(cls, writer: BatchWriter) -> None:
        """Stop the previous writer (draining it), start this one."""
        cls.stop()
        cls.current = writer
        writer.start()
        if not cls.drained_at_exit:
            atexit.register(cls.stop)
            cls.drained_at_exit = True

    @classmethod
    def stop(cls) -> None:
        """Drain and stop the current writer."""
        if cls.current is not None:
            cls.current.stop()
            cls.current = None
