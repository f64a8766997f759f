"""The seam between a connection and what carries its messages.

`Transport` is all `signaling.server.connection.Connection` knows of a
transport; each module beside this one implements it for one way in:

- `ws`: our own RFC 6455 path for ``/ws`` (and under Socket.IO's WebSocket);
- `socketio`: Socket.IO v5 packets over a WebSocket or over `polling`;
- `polling`: Engine.IO HTTP long-polling, fed by the HTTP routes;
- `asgi`: hypercorn's own WebSocket path, for the plain-ASGI deployment.

This module imports nothing of them, nor of the connection (httpx's
``_transports/base.py`` is the model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..outbox import Outbox

__all__ = ["Transport"]


class Transport(Protocol):
    """How a connection reads and writes WebSocket messages."""

    @property
    def peer_close(self) -> tuple[int, str] | None:
        """The client's close code and reason, once it sent a close frame."""
        ...

    @property
    def last_activity(self) -> float:
        """`trio.current_time` of the last bytes received (any frame, pongs included)."""
        ...

    outbox: Outbox | None
    """Where the transport queues its own control frames (pongs, pings)."""

    def ping(self) -> None:
        """Queue a WebSocket ping (a no-op where the server below pings by itself)."""
        ...

    async def receive(self) -> list[tuple[bool, bytes | str]] | None:
        """The next messages as ``(is_text, payload)``; None after close or EOF.

        Raises `ProtocolError` when the client breaks RFC 6455.
        """
        ...

    async def send(self, messages: list[bytes], control: list[bytes]) -> None:
        """Write transport ``control`` frames, then ``messages``, as few writes as possible."""
        ...

    async def send_close(self, code: int, reason: str) -> None:
        """Send the close frame."""
        ...

    async def aclose(self) -> None:
        """Release the underlying connection."""
        ...
