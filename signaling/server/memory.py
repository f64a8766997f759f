"""An in-process listener: connections without TCP, a port or the network.

`serve` (``listeners=[MemoryListener()]``) accepts from it like from a TCP
listener, and a client in the same trio run opens a connection with
`MemoryListener.connect`; the Python SDK takes that as its ``open_stream``.
The protocol suite runs on it, so it needs no port and can run under trio's
autojump clock (timeouts are skipped through instead of waited for).

Each connection is an ``AF_UNIX`` socket pair rather than one of trio's
memory streams, on purpose: the ``/ws`` transport reads the socket's file
descriptor straight from epoll (`signaling.server.transports.ws`), and the
kernel's buffers give the same back-pressure a TCP connection gives, so a
client that stops reading is treated exactly as on the network.
"""

from __future__ import annotations

import socket

import trio

__all__ = ["MemoryListener"]


class MemoryListener(trio.abc.Listener[trio.SocketStream]):
    """Hands the server one end of each socket pair `connect` makes.

    ``backlog`` bounds the connections made but not yet accepted, as a TCP
    listen queue does; `connect` waits while it is full.
    """

    def __init__(self, backlog: int = 128) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.SocketStream](backlog)
        self.socket = _Unbound()
        """What `serve` asks for the bound port (there is none: 0)."""

    async def connect(self, host: str = "", port: int = 0) -> trio.SocketStream:
        """A new connection's client end (``host`` and ``port`` are ignored:
        the signature is the SDK's ``open_stream``)."""
        client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await self._send.send(trio.SocketStream(trio.socket.from_stdlib_socket(server)))
        except BaseException as exc:
            client.close()
            server.close()
            if isinstance(exc, trio.ClosedResourceError):
                raise ConnectionRefusedError("the listener is closed") from None
            raise
        return trio.SocketStream(trio.socket.from_stdlib_socket(client))

    async def accept(self) -> trio.SocketStream:
        """The server end of the next connection."""
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError("the listener is closed") from None

    async def aclose(self) -> None:
        """Stop accepting; a `connect` after this fails like a refused TCP connect."""
        self._send.close()
        while True:  # connections made but never accepted: their clients see EOF
            try:
                stream = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break  # none left, or closed already (aclose may be called twice)
            stream.socket.close()
        self._receive.close()
        await trio.lowlevel.checkpoint()


class _Unbound:
    """Stands in for a listening socket's name: no address, port 0."""

    def getsockname(self) -> tuple[str, int]:
        return ("", 0)
