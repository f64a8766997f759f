"""Hypercorn's own WebSocket path, for ``create_app()`` under plain hypercorn.

`AsgiTransport` is the `Transport` over a Quart websocket. Around it, what
this path needs of hypercorn: `watch_hypercorn_frames` puts `_FrameWatch` in
place of hypercorn's permessage-deflate (which inflates without a bound) so
every client frame counts as activity, keeps hypercorn's ping task from
crashing the server, and keeps a client's close code, which
`keep_close_codes` hands to the transport.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.protocol import ws_stream
from hypercorn.trio import tcp_server
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection
from wsproto.extensions import Extension
from wsproto.frame_protocol import RsvBits

if TYPE_CHECKING:
    from quart.wrappers import Websocket

    from ..outbox import Outbox

__all__ = ["OPENING", "AsgiTransport", "keep_close_codes", "watch_hypercorn_frames"]


OPENING: contextvars.ContextVar[AsgiTransport | None] = contextvars.ContextVar(
    "signaling_opening_websocket", default=None
)
"""The transport whose ``websocket.accept()`` hypercorn is handling (see `_FrameWatch`)."""


class _FrameWatch(Extension):
    """What hypercorn's WebSocket path gets in place of permessage-deflate.

    Hypercorn offers wsproto's permessage-deflate to every client that asks,
    and inflates each message with no bound before checking its size (a few
    compressed kilobytes become gigabytes). This stand-in takes its place:
    it negotiates nothing, so no message is ever compressed, and it sees the
    header of every frame the client sends, pongs included, which is how
    the heartbeat learns that a client is alive on this path (hypercorn
    answers pings and reads pongs without telling the application).
    """

    name = "permessage-deflate"

    def __init__(self) -> None:
        # hypercorn builds the extension inside the app's websocket.accept()
        self._transport = OPENING.get()

    def enabled(self) -> bool:
        """Always consulted for inbound frames (it is only a watch)."""
        return True

    def offer(self) -> bool:
        """A server makes no offers."""
        return False

    def accept(self, offer: str) -> None:
        """Decline: no compression on this path."""
        return None

    def frame_inbound_header(
        self, proto: Any, opcode: Any, rsv: RsvBits, payload_length: int
    ) -> RsvBits:
        """Note the client's activity; claim no reserved bits."""
        if self._transport is not None:
            self._transport.last_activity = trio.current_time()
        return RsvBits(False, False, False)


_CLOSED_KEY = "signaling.closed"


def keep_close_codes(asgi_app: Any) -> Any:
    """Keep the code of a WebSocket's ``websocket.disconnect`` in its scope.

    Quart ends the handler on that event and drops its code; the connection's
    last log line wants it (`AsgiTransport.peer_close`).
    """

    async def app(scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await asgi_app(scope, receive, send)
        closed: dict[str, int] = {}
        scope[_CLOSED_KEY] = closed

        async def watched() -> Any:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                closed.setdefault("code", int(event.get("code", 1005)))
            return event

        return await asgi_app(scope, watched, send)

    return app


def watch_hypercorn_frames() -> None:
    """Put `_FrameWatch` where hypercorn's WebSocket handshake looks up its extension,
    and keep a client from crashing the server through hypercorn's ping task."""
    ws_stream.PerMessageDeflate = _FrameWatch  # type: ignore[attr-defined,assignment]
    if getattr(tcp_server.TCPServer.protocol_send, "_signaling", False):
        return
    original = tcp_server.TCPServer.protocol_send

    async def protocol_send(self: tcp_server.TCPServer, event: Any) -> None:
        # hypercorn's WebSocket ping task can write while the connection's close
        # (send_eof, outside hypercorn's send lock) holds the stream: trio raises
        # BusyResourceError, which hypercorn does not catch, and the whole server
        # stopped. A client can time a bad frame to hit this; the connection is
        # closing either way.
        with contextlib.suppress(trio.BusyResourceError):
            await original(self, event)

    protocol_send._signaling = True  # type: ignore[attr-defined]
    tcp_server.TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]

    echo = ws_stream.WSStream._send_wsproto_event

    async def send_wsproto_event(self: ws_stream.WSStream, event: Any) -> None:
        # Hypercorn echoes a client's close frame from here, then tells the app
        # 1006 whatever the client sent: keep the client's code for the app
        # (`AsgiTransport.peer_close`).
        if isinstance(event, CloseConnection) and self.connection.state in (
            ConnectionState.REMOTE_CLOSING,
            ConnectionState.CLOSED,
        ):
            closed = self.scope.get(_CLOSED_KEY)
            if isinstance(closed, dict):
                closed.setdefault("code", event.code)
        await echo(self, event)

    ws_stream.WSStream._send_wsproto_event = send_wsproto_event  # type: ignore[method-assign]


class AsgiTransport:
    """`signaling.server.transports.base.Transport` over an ASGI (Quart) websocket."""

    def __init__(self, ws: Websocket, *, text: bool) -> None:
        self._ws = ws
        self._text = text
        self._closed: dict[str, int] = ws.scope.get(_CLOSED_KEY, {})  # type: ignore[assignment]
        self.last_activity = trio.current_time()
        """Updated by `_FrameWatch` for every frame the client sends, pongs included."""
        self.outbox: Outbox | None = None

    @property
    def peer_close(self) -> tuple[int, str] | None:
        """The client's close code, once hypercorn reported it (`keep_close_codes`)."""
        code = self._closed.get("code")
        return None if code is None else (code, "")

    def ping(self) -> None:
        """Hypercorn sends the pings on this path (``websocket_ping_interval``)."""

    async def receive(self) -> list[tuple[bool, bytes | str]] | None:
        """One message at a time (hypercorn hands them over singly)."""
        message = await self._ws.receive()
        return [(isinstance(message, str), message)]

    async def send(self, messages: list[bytes], control: list[bytes]) -> None:
        """One ASGI send per message: this path cannot coalesce writes."""
        for message in messages:
            await self._ws.send(message.decode() if self._text else message)

    async def send_close(self, code: int, reason: str) -> None:
        """Close through hypercorn."""
        await self._ws.close(code, reason)

    async def aclose(self) -> None:
        """Hypercorn owns the socket."""
