"""Socket.IO v5 over Engine.IO v4 (WebSocket transport) for the old server's clients.

`SocketIOTransport` wraps the lean WebSocket transport and translates at the
edge: Engine.IO/Socket.IO packets from the client become protocol v1 JSON
frames for the unchanged connection code, and the server's v1 frames become
the old server's events. So a Socket.IO client and a v1 client share
sessions, rate limits, caps, metrics and logs.

In:  ``40{auth}`` → ``auth`` (and ``join-session`` when ``auth.sessionId``
is set); ``42["join-session", …]``, ``42["leave-session", …]``;
``42["signal:offer"|"signal:answer"|"signal:ice-candidate", {type, from, to,
sessionId, data}]`` (the old server's payload) → ``offer``/``answer``/
``ice-candidate`` with ``data`` untouched; ``2``/``3`` ping/pong. Each event
becomes a frame whose ``id`` names the event (and its ack id), so replies find
their way back.
Resume (protocol/SPEC.md §10): ``welcome``'s ``resumeToken`` goes out as the
CONNECT's ``pid``, which socket.io-client (4.6 and later) sends back in its
next CONNECT after a drop; that CONNECT becomes an ``auth`` with ``resume``.

Out: ``welcome`` → ``40{"sid": connectionId, "pid": resumeToken}``; a refused ``auth`` →
``44{"message": …}``; replies to acknowledged events → ``43<id>[reply]``;
relayed signals → ``42["signal:offer", {type, from, to, sessionId, data}]``
(``data`` exactly as its sender sent it); an error → ``42["error", {…,
"event": <the event it answers>}]``; every other frame → ``42[type, frame]``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from ..websocket import OP_TEXT, ProtocolError, close_frame, frame, switching_protocols
from .polling import PollingChannel
from .ws import LeanTransport

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..outbox import Outbox

__all__ = ["SocketIOTransport", "upgrade_polling"]

log = logging.getLogger("signaling.socketio")

_SIGNALS = {
    "signal:offer": "offer",
    "signal:answer": "answer",
    "signal:ice-candidate": "ice-candidate",
}
_ID_PREFIX = "sio"
HELD_MAX = 64
"""Packets CONNECT may hold back while the join of ``auth.sessionId`` is under way."""
_AUTO_JOIN = "sio:join-session"
"""The id of the join that ``auth.sessionId`` implies (its reply is an event, not an ack)."""

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode


def _event_id(ack: str, event: str) -> str:
    """The v1 ``id`` standing for Socket.IO event ``event`` (``ack``: its ack id, or "").

    Replies carry it back as ``replyTo``, so an error can name the event it
    answers and an acknowledged event gets its ``43`` reply.
    """
    return f"{_ID_PREFIX}{ack}:{event}"[:64]


def _parse_event_id(reply_to: str) -> tuple[str, str]:
    """``(ack, event)`` from an id made by `_event_id`; ``("", "")`` for any other."""
    if not reply_to.startswith(_ID_PREFIX):
        return "", ""
    ack, sep, event = reply_to[len(_ID_PREFIX) :].partition(":")
    if not sep or (not ack.isdigit() and ack):
        return "", ""
    return ack, event


def _decode_object(message: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = _decode_any(message)
    return decoded


class SocketIOTransport:
    """`signaling.server.transports.base.Transport` speaking Socket.IO to the client."""

    always_ping = True
    """Engine.IO clients expect a ping every ``pingInterval``, busy or not."""

    def __init__(
        self,
        inner: LeanTransport | PollingChannel,
        *,
        ping_interval: float,
        ping_timeout: float,
        max_payload: int,
    ) -> None:
        self._inner = inner
        self._open = _encode(
            {
                "sid": getattr(inner, "sid", None) or secrets.token_urlsafe(12),
                "upgrades": ["websocket"] if isinstance(inner, PollingChannel) else [],
                "pingInterval": int(ping_interval * 1000),
                "pingTimeout": int(ping_timeout * 1000),
                "maxPayload": max_payload,
            }
        ).decode()
        self._connected = False
        self._disconnected = False
        self._backlog: list[tuple[bool, bytes | str]] = []
        self._auto_join = False
        self._held: list[bytes] | None = None
        """The CONNECT packet and what follows it, while the join that
        ``auth.sessionId`` implies is under way (see `send`)."""
        self._release = False
        if isinstance(inner, PollingChannel):
            inner.owner = self

    def upgrade(self, websocket: LeanTransport, backlog: list[tuple[bool, bytes | str]]) -> None:
        """Move from long-polling to ``websocket`` (after the client's ``5``)."""
        polling = self._inner
        websocket.outbox = polling.outbox
        self._inner = websocket
        self._backlog = backlog
        if isinstance(polling, PollingChannel):
            # packets queued since the last GET go out first, on the WebSocket
            for packet in polling.take_outgoing():
                if packet != "6":
                    self._control(packet)
            polling.upgraded()

    # --- what the connection reads of a transport -------------------------------------

    @property
    def last_activity(self) -> float:
        """When the client last sent anything."""
        return self._inner.last_activity

    @property
    def peer_close(self) -> tuple[int, str] | None:
        """The client's close (a Socket.IO disconnect counts as 1000, whatever
        close frame follows it: the client chose to leave)."""
        if self._disconnected:
            return 1000, ""
        return self._inner.peer_close

    @property
    def outbox(self) -> Outbox | None:
        """Where control packets go; the Engine.IO open packet is queued when it is set."""
        return self._inner.outbox

    @outbox.setter
    def outbox(self, outbox: Outbox | None) -> None:
        self._inner.outbox = outbox
        if outbox is not None:
            self._control("0" + self._open)

    def _control(self, packet: str) -> None:
        """Queue an Engine.IO packet; raises `ProtocolError` 1013 when the client
        does not read (its queue is over the outbox bounds)."""
        control = getattr(self._inner, "control_packet", None)
        if control is not None:
            control(packet)
        elif self._inner.outbox is not None and not self._inner.outbox.put_control(
            frame(OP_TEXT, packet.encode())
        ):
            raise ProtocolError(1013, "the client is not reading")

    def ping(self) -> None:
        """An Engine.IO ping (the client answers ``3``)."""
        with contextlib.suppress(ProtocolError):
            # one ping per interval; a client that reads nothing times out instead
            self._control("2")

    # --- client → server --------------------------------------------------------------

    async def receive(self) -> list[tuple[bool, bytes | str]] | None:
        """The client's packets as protocol v1 JSON frames."""
        while True:
            if self._disconnected:
                return None
            if self._backlog:
                batch: list[tuple[bool, bytes | str]] | None = self._backlog
                self._backlog = []
            else:
                batch = await self._inner.receive()
            if batch is None:
                return None
            frames: list[tuple[bool, bytes | str]] = []
            for _, payload in batch:
                try:
                    text = payload.decode() if isinstance(payload, bytes) else payload
                except UnicodeDecodeError:
                    # handed on as it is: the connection closes with 1007 (RFC 6455)
                    frames.append((True, payload))
                    continue
                frames.extend((True, _encode(f)) for f in self._translate_in(text))
            if frames:
                return frames

    def _translate_in(self, packet: str) -> list[dict[str, Any]]:
        if packet == "3":
            return []
        if packet == "2":
            self._control("3")
            return []
        if packet.startswith("40"):
            auth = _json(packet[2:]) or {}
            if not isinstance(auth, dict):
                auth = {}
            frames: list[dict[str, Any]] = [{"type": "auth", "userId": auth.get("userId", "")}]
            if isinstance(auth.get("token"), str):
                frames[0]["token"] = auth["token"]
            pid = auth.get("pid")
            if isinstance(pid, str) and 0 < len(pid) <= 128:
                # socket.io-client (4.6 and later) sends back the CONNECT's pid on
                # reconnect (its "connection state recovery"): ours is the resume token
                frames[0]["resume"] = pid
            if auth.get("sessionId"):
                self._auto_join = True
                frames.append(
                    {"type": "join-session", "sessionId": auth["sessionId"], "id": _AUTO_JOIN}
                )
            return frames
        if packet.startswith("41"):
            self._disconnected = True
            return []
        if packet.startswith("42"):
            body = packet[2:]
            digits = len(body) - len(body.lstrip("0123456789"))
            ack, body = body[:digits], body[digits:]
            event = _json(body)
            if not isinstance(event, list) or not event or not isinstance(event[0], str):
                return [{"type": "malformed Socket.IO event", "id": _event_id(ack, "?")}]
            name, payload = event[0], event[1] if len(event) > 1 else None
            frame_id = _event_id(ack, name)
            if name in ("join-session", "leave-session"):
                session = payload.get("sessionId") if isinstance(payload, dict) else payload
                return [{"type": name, "sessionId": session, "id": frame_id}]
            if name in _SIGNALS and isinstance(payload, dict):
                # The old server's payload, {type, from, to, sessionId, data}: ``data``
                # goes through untouched (relayed as sent); ``from`` is the server's.
                signal: dict[str, Any] = {
                    "type": _SIGNALS[name],
                    "to": payload.get("to"),
                    "sessionId": payload.get("sessionId"),
                    "id": frame_id,
                }
                if "data" in payload:
                    signal["data"] = payload["data"]
                return [signal]
            if name == "connection-state" and isinstance(payload, dict):
                return [{**payload, "type": "connection-state", "id": frame_id}]
            return [{"type": name, "id": frame_id}]
        return []

    # --- server → client ------------------------------------------------------------------

    async def send(self, messages: list[bytes], control: list[bytes]) -> None:
        """The server's v1 frames as Socket.IO packets, in one write.

        With ``auth.sessionId``, CONNECT waits for that join's answer, as on
        the old server, where the seat existed before the client heard
        ``connect``: with several nodes the join waits for Redis, and a client
        that acts on ``connect`` (a peer that joins because this one told it
        to) must find the seat taken.
        """
        packets: list[bytes] = []
        for message in messages:
            packet = self._translate_out(message)
            if self._held is None:
                packets.append(packet)
                continue
            self._held.append(packet)
            # bounded: the reader waits on the join meanwhile, so little can
            # queue here, but a hold must never grow past what an outbox takes
            if self._release or len(self._held) >= HELD_MAX:
                packets += self._held
                self._held = None
        await self._inner.send(packets, control)

    def _translate_out(self, message: bytes) -> bytes:
        out = _decode_object(message)
        kind = out["type"]
        reply_to = out.pop("replyTo", "")
        if reply_to == _AUTO_JOIN:
            self._release = True
        if kind == "welcome":
            self._connected = True
            if self._auto_join and not self._release:
                self._held = []
            connected = {"sid": out["connectionId"]}
            if "resumeToken" in out:
                connected["pid"] = out["resumeToken"]  # see the CONNECT above
            return b"40" + _encode(connected)
        if kind == "error" and not self._connected:
            return b"44" + _encode({"message": out["message"], "data": out})
        if kind in ("offer", "answer", "ice-candidate"):
            # the old server's shape: no id (ours, for replies), data exactly as sent
            payload = {
                "type": kind,
                "from": out["from"],
                "to": out["to"],
                "sessionId": out["sessionId"],
                "data": out["data"],
            }
            return b"42" + _encode([f"signal:{kind}", payload])
        ack, event = _parse_event_id(reply_to)
        if ack:
            return b"43" + ack.encode() + _encode([out])
        if kind == "error" and event:
            # Nothing is dropped silently: the event it answers is named.
            out["event"] = event
        return b"42" + _encode([kind, out])

    async def send_close(self, code: int, reason: str) -> None:
        """A Socket.IO disconnect, then the WebSocket close frame."""
        await self._inner.send_close(code, reason)

    async def aclose(self) -> None:
        """Close the TCP connection."""
        await self._inner.aclose()


def _json(text: str) -> Any:
    try:
        return _decode_any(text) if text else None
    except (msgspec.DecodeError, RecursionError):
        return None


async def upgrade_polling(
    stream: trio.abc.Stream,
    key: str,
    rest: bytes,
    channel: PollingChannel,
    *,
    max_message: int,
    probe_limit: float,
    upgraded: Callable[[], object],
) -> None:
    """Engine.IO's move of a polling session onto this WebSocket: 101, then
    ``2probe`` → ``3probe`` and ``5``, within ``probe_limit`` seconds; then the session's
    `SocketIOTransport` carries on over it (``upgraded`` is called as it does)
    and this returns once the connection has closed the stream. A client that
    breaks RFC 6455 meanwhile gets its close code."""
    await stream.send_all(switching_protocols(key))
    websocket = LeanTransport(stream, text=True, max_message=max_message, pending=rest)
    try:
        with trio.move_on_after(probe_limit):
            while not channel.closed:
                batch = await websocket.receive()
                if batch is None:
                    break
                for index, (_, packet) in enumerate(batch):
                    if packet == "2probe":
                        await stream.send_all(frame(OP_TEXT, b"3probe"))
                        # answer the waiting GET so the client can pause polling, send 5
                        channel.control_packet("6")
                    elif packet == "5" and channel.owner is not None:
                        upgraded()
                        websocket.closed = trio.Event()
                        channel.owner.upgrade(websocket, batch[index + 1 :])
                        break
                else:
                    continue
                break
    except ProtocolError as exc:
        log.info("Engine.IO upgrade of %s closed %d: %s", channel.sid, exc.code, exc.reason)
        with trio.move_on_after(1):
            await stream.send_all(close_frame(exc.code, exc.reason))
        websocket.closed = None
    if websocket.closed is None:
        await stream.aclose()
        return
    # The connection owns the stream now; trio closes a stream when its
    # handler returns, so stay until the connection has closed it.
    await websocket.closed.wait()
