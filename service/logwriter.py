"""Writing log lines off the event loop, in batches.

Code that logs only builds a record and puts it on a queue (`Enqueue`). One writer thread
wakes when records are waiting, formats and writes everything queued in one write, then pauses
briefly so it wakes at most `PAUSE`-ly often: under load it takes the GIL a few dozen times a
second, not once per request. A slow terminal or pipe therefore never stalls a request. The
queue is drained when the writer is stopped, and at exit.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
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
            try:
                self._stream.write("".join(lines))
                self._stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: nothing left to tell
                pass
        return going

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
