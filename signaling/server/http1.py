"""The request head of an HTTP/1.1 connection, read the way RFC 9112 says (sans-IO).

The front door reads each connection's first request head with `find_head_end`
and `parse_head`, then decides alone what happens to it: a WebSocket upgrade
to one of our endpoints is served by our transports, any other upgrade is
refused, and only a plain request is handed to hypercorn (which then serves
that one request and closes: nothing it reads later can be an upgrade the
front door did not see). So the rules that decide "is this a WebSocket
upgrade, and to where" live here, once:

- the request line is ``method SP request-target SP HTTP/1.x``; the method is
  case-sensitive (``get`` is not ``GET``, RFC 9110 §9.1); HTTP/2 or anything
  else is refused;
- lines end in CRLF; a bare LF, obsolete line folding (RFC 9112 §5.2) and
  whitespace before a field's colon (§5.1) are refused with 400;
- HTTP/1.1 needs exactly one ``Host`` (§3.2);
- the target is origin-form (``/ws?x``) or absolute-form
  (``http://host/ws``, §3.2.2); its path is compared after decoding
  percent-encoded unreserved characters (RFC 3986 §6.2.2.2: ``/%77s`` is
  ``/ws``), never after merging slashes (``//ws`` is another path);
- ``Upgrade`` and ``Connection`` are comma-separated lists that may come in
  several fields; tokens compare case-insensitively.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["HeadError", "Request", "find_head_end", "json_response", "parse_head"]

HEAD_LIMIT = 16384
"""Largest request head (request line and fields) read, in bytes."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNRESERVED_ESCAPE = re.compile(r"%(2[DdEe]|3[0-9]|[46][1-9A-Fa-f]|[57][0-9Aa]|5[Ff]|7[Ee])")


class HeadError(Exception):
    """The head breaks HTTP/1.1: answer ``status`` with ``message`` and close."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


@dataclass
class Request:
    """A parsed request head."""

    method: str
    target: str
    version: str
    path: str
    """The target's path, unreserved escapes decoded."""
    query: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    """Field values by lower-case name, in order, one entry per field line."""

    def tokens(self, name: str) -> list[str]:
        """The comma-separated tokens of every ``name`` field, lower-cased."""
        return [
            token.strip().lower()
            for value in self.headers.get(name, ())
            for token in value.split(",")
            if token.strip()
        ]

    def first(self, name: str) -> str | None:
        """The first ``name`` field's value."""
        values = self.headers.get(name)
        return values[0] if values else None

    @property
    def wants_upgrade(self) -> bool:
        """The client asks to switch protocols (any ``Upgrade`` field at all)."""
        return "upgrade" in self.headers

    @property
    def wants_websocket(self) -> bool:
        """``Upgrade`` names websocket (RFC 6455 §4.2.1, as a list token)."""
        return "websocket" in self.tokens("upgrade")

    def query_value(self, name: str) -> str | None:
        """The first ``name=value`` of the query string."""
        for pair in self.query.split("&"):
            key, _, value = pair.partition("=")
            if key == name:
                return value
        return None


def find_head_end(buffer: bytes) -> int | None:
    """Index just past the head's blank line, or None while it is incomplete.

    Raises `HeadError` for a head over `HEAD_LIMIT` (however it arrived) and
    for a bare-LF blank line, so such a head is answered at once rather than
    waited on until the read timeout.
    """
    end = buffer.find(b"\r\n\r\n")
    if end >= 0:
        if end + 4 > HEAD_LIMIT:
            raise HeadError(431, "head-too-large", f"request head over {HEAD_LIMIT} bytes")
        return end + 4
    if len(buffer) > HEAD_LIMIT:
        raise HeadError(431, "head-too-large", f"request head over {HEAD_LIMIT} bytes")
    # no CRLF CRLF yet, but a blank line ended by a bare LF: it never will come
    if b"\n\n" in buffer or b"\n\r\n" in buffer:
        raise HeadError(400, "bad-request", "request lines must end in CRLF")
    return None


def parse_head(head: bytes) -> Request:
    """Parse a complete head (ending in the blank line); raises `HeadError`."""
    lines = head[:-4].split(b"\r\n")
    if any(b"\n" in line or b"\r" in line for line in lines):
        raise HeadError(400, "bad-request", "request lines must end in CRLF")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise HeadError(400, "bad-request", "malformed request line")
    method, raw_target, version = (part.decode("latin-1") for part in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HeadError(505, "version-not-supported", "only HTTP/1.1 is served here")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HeadError(400, "bad-request", "obsolete line folding is not accepted")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HeadError(400, "bad-request", "malformed header field")
        headers.setdefault(name.decode("latin-1").lower(), []).append(
            value.strip(b" \t").decode("latin-1")
        )
    if version == "HTTP/1.1" and len(headers.get("host", ())) != 1:
        raise HeadError(400, "bad-request", "HTTP/1.1 needs exactly one Host field")
    path, query = _split_target(method, raw_target)
    return Request(method, raw_target, version, path, query, headers)


def _split_target(method: str, target: str) -> tuple[str, str]:
    if target.startswith("/"):
        path, _, query = target.partition("?")
    elif target.lower().startswith(("http://", "https://")):
        parts = urlsplit(target)
        path, query = parts.path or "/", parts.query
    elif target == "*" and method == "OPTIONS":
        return "*", ""
    elif method == "CONNECT":
        raise HeadError(405, "method-not-allowed", "CONNECT is not served here")
    else:
        raise HeadError(400, "bad-request", "malformed request target")
    path, _, _ = path.partition("#")
    return _UNRESERVED_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), path), query


_REASONS = {
    404: "Not Found",
    405: "Method Not Allowed",
    505: "HTTP Version Not Supported",
    429: "Too Many Requests",
    503: "Service Unavailable",
    400: "Bad Request",
    403: "Forbidden",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
}


def json_response(status: int, body: dict[str, Any], headers: str = "") -> bytes:
    """A whole ``Connection: close`` response with a JSON ``body`` (``headers``:
    extra header lines, each ending in CRLF): how the front door refuses."""
    reason = _REASONS[status]
    payload = json.dumps(body).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n{headers}\r\n"
    ).encode("latin-1") + payload
