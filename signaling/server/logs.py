"""Log set-up: human-readable lines or JSON lines, ids on every line.

Every event about a connection is logged with ``extra={"connection_id": …,
"user_id": …}``; the formatters put both on each line (``-`` when unknown).
Tokens and SDP bodies are never passed to a logger.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]

_FIELDS = ("connection_id", "user_id", "session_id")


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [connection user] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(ids)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        connection = getattr(record, "connection_id", None)
        user = getattr(record, "user_id", None)
        record.ids = f"[{connection or '-'} {user or '-'}] " if connection or user else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            entry.update(event)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str) -> None:
    """Send the root logger's records to stderr as ``text`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("hypercorn.error").setLevel(max(logging.getLevelName(level), logging.INFO))
