"""Python client SDK for signaling protocol v1, on trio-websocket.

::

    async with signaling.client.connect("ws://127.0.0.1:3001/ws", user_id="alice") as conn:
        joined = await conn.join("room-1")          # SessionJoined; raises on error
        await conn.send_offer("bob", "room-1", {"type": "offer", "sdp": sdp})
        async for frame in conn:                    # every other server frame
            ...

Errors the server answers to a request raise the matching
`signaling.errors.SignalingError` subclass; a close raises `ConnectionClosed`.
"""

from __future__ import annotations

import itertools
import math
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import trio
import trio_websocket
from msgspec import UNSET

from ..codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, SERVER_CODECS
from ..errors import SignalingError, error_class
from ..frames import (
    Answer,
    Auth,
    ClientFrame,
    ConnectionState,
    Error,
    IceCandidate,
    JoinSession,
    LeaveSession,
    Offer,
    ServerFrame,
    SessionJoined,
    SessionLeft,
    Welcome,
)

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Mapping

__all__ = ["Client", "ConnectionClosed", "connect"]


class ConnectionClosed(Exception):
    """The server closed the connection (or it broke: code 1006)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class Client:
    """An authenticated connection. Create it with `connect`."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, encoding: str) -> None:
        self._ws = ws
        self._codec = SERVER_CODECS[encoding]
        self._ids = itertools.count(1)
        self._pending: dict[str, trio.MemorySendChannel[ServerFrame]] = {}
        self._frames_in, self._frames_out = trio.open_memory_channel[ServerFrame](math.inf)
        self._closed: ConnectionClosed | None = None
        self.welcome: Welcome | None = None
        """The server's ``welcome`` frame."""

    @property
    def user_id(self) -> str:
        """The userId the server authenticated."""
        assert self.welcome is not None
        return self.welcome.user_id

    @property
    def connection_id(self) -> str:
        """The server's id for this connection."""
        assert self.welcome is not None
        return self.welcome.connection_id

    # --- sending -------------------------------------------------------------------

    async def send(self, frame: ClientFrame) -> None:
        """Send one frame as it is."""
        await self.send_raw(self._codec.encode(frame))

    async def send_raw(self, message: bytes | str) -> None:
        """Send one WebSocket message as given (text for JSON, binary for MessagePack)."""
        if self._closed is not None:
            raise self._closed
        if self._codec.text and isinstance(message, bytes):
            message = message.decode()
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed_error(exc) from exc

    async def request(self, frame: ClientFrame) -> ServerFrame:
        """Send ``frame`` with a fresh ``id`` and wait for the reply that names it.

        Raises the `signaling.errors.SignalingError` subclass of an ``error`` reply.
        """
        frame_id = f"r{next(self._ids)}"
        frame = msgspec.structs.replace(frame, id=frame_id)
        send, receive = trio.open_memory_channel[ServerFrame](1)
        self._pending[frame_id] = send
        try:
            await self.send(frame)
            try:
                reply = await receive.receive()
            except trio.EndOfChannel:
                assert self._closed is not None
                raise self._closed from None
        finally:
            self._pending.pop(frame_id, None)
        if isinstance(reply, Error):
            raise _error(reply)
        return reply

    async def join(self, session_id: str) -> SessionJoined:
        """Join a session; returns ``session-joined`` with the participants already there."""
        reply = await self.request(JoinSession(session_id=session_id))
        assert isinstance(reply, SessionJoined)
        return reply

    async def leave(self, session_id: str) -> SessionLeft:
        """Leave a session."""
        reply = await self.request(LeaveSession(session_id=session_id))
        assert isinstance(reply, SessionLeft)
        return reply

    async def send_offer(
        self,
        to: str,
        session_id: str,
        sdp: Mapping[str, Any],
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Relay an offer (an RTCSessionDescriptionInit mapping) to ``to``.

        ``extra`` fields go into ``data`` beside ``sdp`` and reach the receiver
        as they are (a call id, a sequence number).
        """
        data = {"sdp": dict(sdp), **(extra or {})}
        await self.send(Offer(to=to, session_id=session_id, data=data))

    async def send_answer(
        self,
        to: str,
        session_id: str,
        sdp: Mapping[str, Any],
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Relay an answer to ``to`` (``extra`` as in `send_offer`)."""
        data = {"sdp": dict(sdp), **(extra or {})}
        await self.send(Answer(to=to, session_id=session_id, data=data))

    async def send_candidate(
        self,
        to: str,
        session_id: str,
        candidate: Mapping[str, Any] | None,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Relay an RTCIceCandidateInit mapping (None: end of candidates) to ``to``."""
        data = {"candidate": None if candidate is None else dict(candidate), **(extra or {})}
        await self.send(IceCandidate(to=to, session_id=session_id, data=data))

    async def report_state(self, session_id: str, state: str) -> None:
        """Tell the server the RTCPeerConnection state (logged, not relayed)."""
        await self.send(ConnectionState(session_id=session_id, state=state))

    # --- receiving -----------------------------------------------------------------

    async def receive(self) -> ServerFrame:
        """The next frame that is not a reply to `request`; raises `ConnectionClosed`."""
        try:
            return await self._frames_out.receive()
        except trio.EndOfChannel:
            assert self._closed is not None
            raise self._closed from None

    def __aiter__(self) -> AsyncIterator[ServerFrame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ServerFrame]:
        while True:
            try:
                yield await self.receive()
            except ConnectionClosed:
                return

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection."""
        await self._ws.aclose(code, reason)

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection closed, once it has."""
        return self._closed

    def _closed_error(self, exc: trio_websocket.ConnectionClosed) -> ConnectionClosed:
        if self._closed is None:
            reason = exc.reason
            code = 1006 if reason is None else reason.code
            self._closed = ConnectionClosed(code, (reason.reason or "") if reason else "")
        return self._closed

    async def _read(self) -> None:
        decode = self._codec.decode
        try:
            while True:
                message = await self._ws.get_message()
                frame = decode(message)
                reply_to = getattr(frame, "reply_to", UNSET)
                if reply_to is not UNSET:
                    waiter = self._pending.pop(reply_to, None)
                    if waiter is not None:
                        waiter.send_nowait(frame)
                        continue
                self._frames_in.send_nowait(frame)
        except trio_websocket.ConnectionClosed as exc:
            self._closed_error(exc)
        finally:
            if self._closed is None:
                self._closed = ConnectionClosed(1006, "connection lost")
            self._frames_in.close()
            for waiter in self._pending.values():
                waiter.close()


def _error(frame: Error) -> SignalingError:
    return error_class(frame.code)(
        frame.message, session_id=frame.session_id, retry_after_ms=frame.retry_after_ms
    )


@asynccontextmanager
async def connect(
    url: str,
    *,
    user_id: str,
    token: str | None = None,
    encoding: Literal["json", "msgpack"] = "json",
    open_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Client]:
    """Open, authenticate, and yield a `Client`; closes it on exit.

    Raises `ConnectionClosed` (or the error of an ``error`` frame) when the
    server refuses ``auth``. For ``wss://`` URLs, ``ssl_context`` decides which
    certificates to trust (default: the system's).
    """
    subprotocol = JSON_SUBPROTOCOL if encoding == "json" else MSGPACK_SUBPROTOCOL
    try:
        async with _connected(
            url, subprotocol, user_id, token, open_timeout, ssl_context
        ) as client:
            yield client
    except BaseExceptionGroup as group:
        raise _single(group) from None


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested single-member groups, else the group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def _connected(
    url: str,
    subprotocol: str,
    user_id: str,
    token: str | None,
    open_timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> AsyncIterator[Client]:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(open_timeout):
            ws = await trio_websocket.connect_websocket_url(
                nursery,
                url,
                subprotocols=[subprotocol],
                message_queue_size=0,
                ssl_context=ssl_context,
            )
        try:
            client = Client(ws, subprotocol)
            nursery.start_soon(client._read)
            auth = Auth(user_id=user_id, token=UNSET if token is None else token)
            await client.send(auth)
            with trio.fail_after(open_timeout):
                first = await client.receive()
            if isinstance(first, Error):
                raise _error(first)
            if not isinstance(first, Welcome):
                raise ConnectionClosed(1002, f"expected welcome, got {type(first).__name__}")
            client.welcome = first
            yield client
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 2):
                await ws.aclose()
            nursery.cancel_scope.cancel()
