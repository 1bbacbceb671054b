"""Logging: one JSON line per event (human-readable text on a terminal), secrets redacted.

Every record carries the request id of the request it belongs to (from `X-Request-ID` or
generated) and, when known, `task_id` and `upstream_id` (pass them in `extra=`). Callback
tokens, API keys and signing secrets never reach a log line: paths are redacted and anything
shaped like a key or secret is masked by the formatter itself.

The event loop never formats or writes a line: records go on a queue (with the request id they
were made under) and a writer thread formats, redacts and writes them to stderr in batches
(see `logwriter`), so a slow terminal or pipe cannot stall requests.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import sys
from contextvars import ContextVar
from typing import Any

from service.clock import rfc3339
from service.logwriter import BatchWriter, Enqueue, Writers

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_TOKEN_PATH = re.compile(r"(/webhooks/grsai/)[^\s/?\"']+")
_SECRETS = re.compile(r"\b(grk_|whsec_|sk-)[A-Za-z0-9+/=_-]{6,}")
_FIELDS = ("event", "task_id", "upstream_id", "method", "path", "route", "status", "duration_ms",
           "outcome", "client")  # fmt: skip


def redact(text: str) -> str:
    """Mask callback tokens in paths, and API keys / signing secrets anywhere.

    Most text carries none of their markers: a substring check (far cheaper than the regular
    expressions, which every log line's fields go through) lets it pass untouched."""
    if "grk_" in text or "whsec_" in text or "sk-" in text:
        text = _SECRETS.sub(r"\1***", text)
    if "/webhooks/grsai/" in text:
        text = _TOKEN_PATH.sub(r"\1***", text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites records whose text carries a secret; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message in place."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record with its context fields."""
        line: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        request_id = _request_id(record)
        if request_id:
            line["request_id"] = request_id
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the request id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The usual line, plus `[request_id]`."""
        text = redact(super().format(record))
        request_id = _request_id(record)
        return f"{text} [{request_id}]" if request_id else text


def _request_id(record: logging.LogRecord) -> str | None:
    """The request id a record was made under (stamped by `Enqueue`, else the current one)."""
    return getattr(record, "request_id", None) or REQUEST_ID.get()


def configure(level: str, fmt: str = "auto") -> None:
    """Root logging: JSON lines unless on a terminal (or as `fmt` says: json, text), written to
    stderr by a listener thread."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(RedactSecrets())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    Writers.replace(BatchWriter(records, handler, sys.stderr))
    # a record need not know its process: it is never printed (the thread is: see `demo`)
    logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [Enqueue(records, REQUEST_ID)]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True  # requests are logged by our middleware
