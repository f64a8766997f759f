"""Streams that hand hypercorn a connection whose request head the front door
already read: it reads those bytes first, then the socket (or TLS) as usual."""

from __future__ import annotations

import contextlib

import trio

__all__ = ["Replay", "TlsReplay"]


class Replay(trio.abc.Stream):
    """A stream that first returns bytes already read, for hypercorn."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes, socket: trio.SocketStream) -> None:
        self._stream = stream
        self._prefix = prefix
        self.socket = socket.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        # Hypercorn ends a "Connection: close" response with send_eof() then
        # aclose() from the app's task, which is being cancelled by then: a
        # checkpoint before the shutdown would leave the connection open until
        # the client gives up. So the FIN goes out here, synchronously.
        if isinstance(self._stream, trio.SocketStream):
            if not self._stream.socket.did_shutdown_SHUT_WR:
                with contextlib.suppress(OSError):
                    self._stream.socket.shutdown(trio.socket.SHUT_WR)
        elif isinstance(self._stream, trio.abc.HalfCloseableStream):
            await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class TlsReplay(Replay):
    """`Replay` over TLS: what hypercorn asks of an SSLStream (handshake done)."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream], prefix: bytes) -> None:
        super().__init__(stream, prefix, stream.transport_stream)
        self._tls = stream
        self.transport_stream = stream.transport_stream

    async def do_handshake(self) -> None:
        await self._tls.do_handshake()

    def selected_alpn_protocol(self) -> str | None:
        protocol: str | None = self._tls.selected_alpn_protocol()
        return protocol
