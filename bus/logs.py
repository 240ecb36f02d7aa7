"""Logging set-up: short snake_case event names with bound context, one line each."""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class EventFormatter(logging.Formatter):
    """``ts level logger event key=value …`` — the traceback only for unexpected errors."""

    def format(self, record: logging.LogRecord) -> str:
        context = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{stamp} {record.levelname.lower()} {record.name} {record.getMessage()}"
        if context:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in context.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "info") -> None:
    """Send Sophia's logs to stderr at ``level`` (idempotent)."""
    root = logging.getLogger("sophia")
    if any(isinstance(h.formatter, EventFormatter) for h in root.handlers):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EventFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
