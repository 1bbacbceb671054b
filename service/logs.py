"""Logging set-up: callback tokens never reach a log line."""

from __future__ import annotations

import logging
import re

_TOKEN_PATH = re.compile(r"(/webhooks/grsai/)[^\s/?\"']+")


def redact(text: str) -> str:
    """Replace callback tokens in URLs and paths by `***`."""
    return _TOKEN_PATH.sub(r"\1***", text)


class RedactSecrets(logging.Filter):
    """A filter that rewrites records whose text carries a callback token."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message in place; never drop the record."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure(level: str) -> None:
    """Root logging for the CLI, with the redaction filter on its handlers."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for handler in logging.getLogger().handlers:  # every propagated record passes these
        handler.addFilter(RedactSecrets())
    logging.getLogger("httpx").setLevel(logging.WARNING)
