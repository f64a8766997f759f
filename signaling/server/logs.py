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

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "escape"]

_FIELDS = ("connection_id", "user_id", "session_id")


_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord("\\"): "\\\\"})


def escape(text: str) -> str:
    """``text`` with control characters (CR and LF among them) written as escapes,
    so a client's userId, sessionId or state can never start a forged log line."""
    return text.translate(_CONTROL)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [connection user] message``; one record, one line.

    The ids and the message are escaped (`escape`); a traceback, when there
    is one, follows on its own lines as usual.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(ids)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        connection = getattr(record, "connection_id", None)
        user = getattr(record, "user_id", None)
        record.ids = (
            f"[{escape(str(connection or '-'))} {escape(str(user or '-'))}] "
            if connection or user
            else ""
        )
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line before any traceback, with the client's text escaped."""
        record.message = escape(record.message)
        return super().formatMessage(record)


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
