"""A lean Redis link for the signal path: pipelined PUBLISHes, a subscriber that
reads replies in batches.

Every cross-node signal is one PUBLISH on the sending node and one Pub/Sub
message on the receiving one. Through coredis each cost a task hop, a retry
policy, a timeout scope and a reply future: a third of a node's CPU in the
cross-node bench (bench/RESULTS.md). This module speaks RESP2 on one plain
trio stream per direction instead: a flush writes all its PUBLISH commands
in one ``send_all`` and reads their replies together, and the subscriber
parses every message one read brought before applying any. Seats (the Lua
scripts, the heartbeat) stay on coredis: they are rare.

The URL means what it means to coredis (`coredis.ConnectionPool.from_url`):
``redis://`` and ``rediss://`` (TLS, its ``ssl_*`` query parameters) with
user and password, and ``unix://``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import coredis
import trio

from .. import rawsocket

if TYPE_CHECKING:
    import ssl

__all__ = ["RedisReplyError", "RespLink", "RespParser", "command"]

MAX_BUFFER = 64 * 2**20
"""Bytes of unparsed replies a link holds at most (Redis's own Pub/Sub output
limit is 32 MiB by default); more ends the link."""

CONNECT_TIMEOUT = 5.0
"""Seconds to connect, TLS handshake and AUTH included."""

_INCOMPLETE = object()


class RedisReplyError(Exception):
    """Redis answered with an error (``-ERR ...``), or broke RESP."""


def command(*args: str | bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RespParser:
    """RESP2 replies from bytes fed in any pieces; errors are `RedisReplyError` values.

    A reply that arrives in many reads is parsed once: the parser waits until
    the bytes its headers announce are there (so a large message costs its
    size, not its size times its reads), and refuses one announced over
    ``limit`` at once.
    """

    __slots__ = ("_buffer", "_need", "limit")

    def __init__(self, limit: int = MAX_BUFFER) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._need = 0
        """Bytes the buffer must hold before parsing can get further."""

    def feed(self, data: bytes | bytearray) -> list[Any]:
        """Every reply complete so far, in order."""
        self._buffer += data
        if len(self._buffer) < self._need:
            return []
        buffer = bytes(self._buffer)
        replies: list[Any] = []
        pos = 0
        end = len(buffer)
        need = 0
        while pos < end:
            value, next_pos = _parse(buffer, pos)
            if value is _INCOMPLETE:
                need = next_pos - pos
                break
            replies.append(value)
            pos = next_pos
        del self._buffer[:pos]
        self._need = need
        if need > self.limit or len(self._buffer) > self.limit:
            raise RedisReplyError(f"a reply over {self.limit} bytes")
        return replies


def _parse(buffer: bytes, pos: int) -> tuple[Any, int]:
    """One reply at ``pos`` and where the next starts; or `_INCOMPLETE` and the
    offset the buffer must reach before trying again (``pos`` + 1: any more)."""
    line_end = buffer.find(b"\r\n", pos)
    if line_end < 0:
        return _INCOMPLETE, len(buffer) + 1
    kind = buffer[pos]
    try:
        if kind == 0x24:  # $ bulk string
            length = int(buffer[pos + 1 : line_end])
            if length < 0:
                return None, line_end + 2
            stop = line_end + 2 + length
            if stop + 2 > len(buffer):
                return _INCOMPLETE, stop + 2
            return buffer[line_end + 2 : stop], stop + 2
        if kind == 0x2A:  # * array
            count = int(buffer[pos + 1 : line_end])
            if count < 0:
                return None, line_end + 2
            items = []
            at = line_end + 2
            for _ in range(count):
                item, at = _parse(buffer, at)
                if item is _INCOMPLETE:
                    return _INCOMPLETE, at
                items.append(item)
            return items, at
        if kind == 0x3A:  # : integer
            return int(buffer[pos + 1 : line_end]), line_end + 2
        if kind == 0x2B:  # + simple string
            return buffer[pos + 1 : line_end], line_end + 2
        if kind == 0x2D:  # - error
            message = buffer[pos + 1 : line_end].decode("utf-8", "replace")
            return RedisReplyError(message), line_end + 2
    except ValueError:
        pass
    raise RedisReplyError(f"not RESP2: {buffer[pos : min(line_end, pos + 40)]!r}")


class RespLink:
    """One connection to Redis: commands written together, replies read in order."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        # plain TCP or Unix socket: its own non-blocking send and recv
        self._sock = rawsocket.stdlib_socket(stream)
        self._parser = RespParser()
        self._replies: list[Any] = []
        self.received = 0
        """Reads that brought bytes (a keep-alive compares it over time)."""
        self.lost = ""
        """Why the link was given up, when it was."""

    @classmethod
    async def open(cls, url: str) -> RespLink:
        """Connect (TLS and AUTH as the URL says); raises `OSError`,
        `RedisReplyError` or `TimeoutError`."""
        pool = coredis.ConnectionPool.from_url(url)
        location: Any = pool.location
        options = pool.connection_kwargs
        with trio.move_on_after(CONNECT_TIMEOUT) as slow:
            stream: trio.abc.Stream
            if hasattr(location, "path"):
                stream = await trio.open_unix_socket(location.path)
            else:
                stream = await trio.open_tcp_stream(location.host, location.port)
                context: ssl.SSLContext | None = options.get("ssl_context")
                if context is not None:
                    tls = trio.SSLStream(stream, context, server_hostname=location.host)
                    await tls.do_handshake()
                    stream = tls
            link = cls(stream)
            password = options.get("password")
            if password:
                username = options.get("username")
                auth = ("AUTH", username, password) if username else ("AUTH", password)
                (reply,) = await link.call([command(*auth)])
                if isinstance(reply, RedisReplyError):
                    await link.aclose()
                    raise reply
        if slow.cancelled_caught:
            raise TimeoutError(f"connecting to Redis took over {CONNECT_TIMEOUT:g} s")
        return link

    async def send(self, commands: list[bytes]) -> None:
        """Write ``commands`` in one write (what the socket does not take at once
        is written as it drains)."""
        data = b"".join(commands)
        sock = self._sock
        if sock is not None:
            sent = rawsocket.send_now(sock, data)
            if sent == len(data):
                return
            data = data[sent:]
        await self.stream.send_all(data)

    async def call(self, commands: list[bytes]) -> list[Any]:
        """Write ``commands`` together and return their replies (errors as values)."""
        await self.send(commands)
        replies: list[Any] = []
        while len(replies) < len(commands):
            replies += await self.receive()
        self._replies = replies[len(commands) :]  # what came after (Pub/Sub messages)
        return replies[: len(commands)]

    async def receive(self) -> list[Any]:
        """The replies of the next read (at least one); raises `EOFError` at the end."""
        replies = self._replies
        if replies:
            self._replies = []
            return replies
        sock = self._sock
        while True:
            data: bytes | bytearray
            if sock is not None:
                data = await rawsocket.receive(sock, 65536)
            else:
                data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("Redis closed the connection")
            self.received += 1
            replies = self._parser.feed(data)
            if replies:
                return replies

    def abort(self) -> None:
        """Break the connection now, from any task: a read or write waiting on it
        raises `trio.ClosedResourceError`."""
        stream: Any = self.stream
        transport = getattr(stream, "transport_stream", stream)
        sock = getattr(transport, "socket", None)
        if sock is not None and sock.fileno() >= 0:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def aclose(self) -> None:
        """Close the connection."""
        with trio.CancelScope(shield=True):
            await self.stream.aclose()
