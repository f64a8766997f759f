"""Engine.IO v4 HTTP long-polling: the transport under `SocketIOTransport` until
the client upgrades to WebSocket (the routes in ``app.py`` feed it)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Protocol

import trio

from ..websocket import ProtocolError

if TYPE_CHECKING:
    from ..outbox import Outbox
    from .ws import LeanTransport

__all__ = ["PollingChannel"]


class Upgradable(Protocol):
    """What owns a polling channel: `SocketIOTransport`, which the front door moves
    to a WebSocket when the client upgrades (named here, not imported: no cycle)."""

    def upgrade(self, websocket: LeanTransport, backlog: list[tuple[bool, bytes | str]]) -> None:
        """Carry on over ``websocket``; ``backlog``: what the client sent after ``5``."""
        ...


class PollingChannel:
    """Engine.IO HTTP long-polling: POST bodies in, packets out to the next GET.

    It stands where the lean WebSocket transport stands under
    `SocketIOTransport`; the routes in ``app.py`` feed it. No upgrade to
    WebSocket is offered: a polling client stays on polling.
    """

    def __init__(
        self, sid: str | None = None, *, max_packets: int = 512, max_bytes: int = 1 << 20
    ) -> None:
        self.sid = sid or secrets.token_urlsafe(12)
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        """Bounds of what waits for the client in each direction (the outbox's)."""
        self._outgoing_bytes = 0
        self.polling = False
        """A GET is waiting: Engine.IO allows one at a time."""
        self.upgrading = False
        """A WebSocket upgrade of this session is under way: one at a time."""
        """The Engine.IO session id (with ``--workers``, it names this worker)."""
        self.outbox: Outbox | None = None
        self.peer_close: tuple[int, str] | None = None
        self.last_activity = trio.current_time()
        self._incoming: list[str] = []
        self._incoming_ready = trio.Event()
        self._outgoing: list[str] = []
        self._outgoing_ready = trio.Event()
        self.closed = False
        self.moved = False
        """Upgraded to WebSocket: polling is over."""
        self.owner: Upgradable | None = None

    def take_outgoing(self) -> list[str]:
        """The packets no GET has fetched yet (handed over at the upgrade)."""
        packets, self._outgoing = self._outgoing, []
        self._outgoing_bytes = 0
        return packets

    def upgraded(self) -> None:
        """The session moved to WebSocket: answer a waiting GET with a noop, stop reading."""
        self.moved = True
        self.control_packet("6")
        self._incoming_ready.set()

    def post(self, body: str) -> bool:
        """Packets the client POSTed (separated by the record separator); False
        when more than ``max_packets`` would wait unread (the POST is refused)."""
        self.last_activity = trio.current_time()
        packets = [p for p in body.split("\x1e") if p]
        if len(self._incoming) + len(packets) > self.max_packets:
            return False
        self._incoming.extend(packets)
        self._incoming_ready.set()
        return True

    async def poll(self, wait_at_most: float) -> str:
        """Wait (at most ``wait_at_most`` seconds) for packets: the body of a GET.

        One GET at a time (the caller checks `polling` first)."""
        self.last_activity = trio.current_time()
        self.polling = True
        try:
            with trio.move_on_after(wait_at_most):
                while not self._outgoing and not self.closed:
                    self._outgoing_ready = trio.Event()
                    await self._outgoing_ready.wait()
        finally:
            self.polling = False
        self.last_activity = trio.current_time()
        if self.closed and not self._outgoing:
            return "1"
        if self.moved and not self._outgoing:
            return "6"
        packets = self.take_outgoing()
        return "\x1e".join(packets) if packets else "6"

    def control_packet(self, packet: str) -> None:
        """Queue an Engine.IO packet for the next GET.

        Raises `ProtocolError` 1013 once more than the bounds wait there (the
        client POSTs but never GETs): the session ends, and its next GET gets
        the close packet.
        """
        if self.closed:
            return
        self._outgoing.append(packet)
        self._outgoing_bytes += len(packet)
        self._outgoing_ready.set()
        if len(self._outgoing) > self.max_packets or self._outgoing_bytes > self.max_bytes:
            self._outgoing = []
            self._outgoing_bytes = 0
            self.closed = True
            self._incoming_ready.set()
            raise ProtocolError(1013, "the client is not polling for its packets")

    async def receive(self) -> list[tuple[bool, bytes | str]] | None:
        """The next POSTed packets; None once closed."""
        while not self._incoming:
            if self.closed:
                return None
            if self.moved:
                return []
            self._incoming_ready = trio.Event()
            await self._incoming_ready.wait()
        packets, self._incoming = self._incoming, []
        return [(True, packet) for packet in packets]

    async def send(self, messages: list[bytes], control: list[bytes]) -> None:
        """Queue packets for the next GET; a client that does not fetch them is dropped."""
        try:
            for message in messages:
                self.control_packet(message.decode())
        except ProtocolError:
            raise trio.BrokenResourceError("the client is not polling for its packets") from None

    async def send_close(self, code: int, reason: str) -> None:
        """The client's next GET gets a close packet."""
        self.closed = True
        self._outgoing_ready.set()
        self._incoming_ready.set()

    async def aclose(self) -> None:
        """Nothing to release."""
        await self.send_close(1000, "")
