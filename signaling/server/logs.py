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

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "escape", "label_process"]

_FIELDS = ("worker", "node", "connection_id", "user_id", "session_id")

_PROCESS: dict[str, str] = {}
"""What names this process on every line (`label_process`): worker, node."""


def label_process(*, worker: str | None = None, node: str | None = None) -> None:
    """Put ``worker`` (its index, under ``--workers``) and/or ``node`` (its
    cluster id, with Redis) on every line this process logs from now on, so
    the lines of several workers or nodes can be told apart."""
    if worker is not None:
        _PROCESS["worker"] = worker
    if node is not None:
        _PROCESS["node"] = node


class _ProcessFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _PROCESS.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord("\\"): "\\\\"})


def escape(text: str) -> str:
    """``text`` with control characters (CR and LF among them) written as escapes,
    so a client's userId, sessionId or state can never start a forged log line."""
    return text.translate(_CONTROL)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [worker=… node=…] [connection user] message``; one
    record, one line (worker and node only when set, see `label_process`).

    The ids and the message are escaped (`escape`); a traceback, when there
    is one, follows on its own lines as usual.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(where)s%(ids)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        where = [
            f"{key}={escape(str(getattr(record, key)))}"
            for key in ("worker", "node")
            if getattr(record, key, None)
        ]
        record.where = f"[{' '.join(where)}] " if where else ""
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
    handler.addFilter(_ProcessFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("hypercorn.error").setLevel(max(logging.getLevelName(level), logging.INFO))
    # coredis logs each of its connection retries at INFO (and a dropped
    # connection with an empty traceback); our own lines say what failed
    logging.getLogger("coredis").setLevel(max(logging.getLevelName(level), logging.WARNING))
