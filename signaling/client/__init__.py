"""Python client SDK for signaling protocol v1, on trio-websocket.

::

    async with signaling.client.connect("ws://127.0.0.1:3001/ws", user_id="alice") as conn:
        joined = await conn.join("room-1")          # SessionJoined; raises on error
        await conn.send_offer("bob", "room-1", {"type": "offer", "sdp": sdp})
        async for frame in conn:                    # every other server frame
            ...

Failures have their own exceptions, each with its cause:

- opening: `ConnectionFailed` (a `ConnectionError`: refused, unreachable, TLS,
  closed before the handshake), `HandshakeRejected` (the server answered the
  upgrade with an HTTP error: ``status_code``, ``error``), `ConnectTimeout`
  (also a `TimeoutError`); a refused ``auth`` raises its
  `signaling.errors.SignalingError` subclass (`Unauthorized`, ...);
- requests: the `SignalingError` subclass of an ``error`` reply, or
  `RequestTimeout` (a `TimeoutError`) when no reply came in time;
- a closed connection: `ConnectionClosed` (``code``, ``reason``); `Client.closed`
  says so as soon as it happens, a server gone silent included (``keepalive``).

With ``reconnect=True`` a connection that drops (1001, 1006, 1011, 1013, 4408) is
opened again with backoff and authenticated (``get_token`` is asked again),
asking to resume (protocol/SPEC.md §10) with the last ``welcome``'s
``resumeToken``. Resumed, it is back in its sessions without the others
noticing, and the frames the server held come next, in order; otherwise its
sessions are re-joined. Either way `Client.receive` first yields a
`Reconnected` event (``resumed`` says which).
"""

from __future__ import annotations

import itertools
import math
import random
import ssl
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import msgspec
import trio
import trio_websocket
from msgspec import UNSET, UnsetType

from ..codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, SERVER_CODECS
from ..errors import (
    BadFrame,
    Forbidden,
    InternalError,
    NotInSession,
    PeerNotFound,
    RateLimited,
    Replaced,
    SessionFull,
    SignalingError,
    TooLarge,
    Unauthorized,
    error_class,
)
from ..frames import (
    Answer,
    Auth,
    ClientFrame,
    ConnectionState,
    Error,
    IceCandidate,
    IceServer,
    JoinSession,
    LeaveSession,
    Offer,
    RelayedAnswer,
    RelayedIceCandidate,
    RelayedOffer,
    ServerFrame,
    SessionJoined,
    SessionLeft,
    UserJoined,
    UserLeft,
    Welcome,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

__all__ = [
    "Answer",
    "Auth",
    "BadFrame",
    "Client",
    "ClientFrame",
    "ConnectTimeout",
    "ConnectionClosed",
    "ConnectionFailed",
    "ConnectionState",
    "Error",
    "Forbidden",
    "HandshakeRejected",
    "IceCandidate",
    "IceServer",
    "InternalError",
    "JoinSession",
    "LeaveSession",
    "NotInSession",
    "Offer",
    "PeerNotFound",
    "RateLimited",
    "Reconnected",
    "RelayedAnswer",
    "RelayedIceCandidate",
    "RelayedOffer",
    "Replaced",
    "RequestTimeout",
    "ServerFrame",
    "SessionFull",
    "SessionJoined",
    "SessionLeft",
    "SignalingError",
    "TooLarge",
    "Unauthorized",
    "UserJoined",
    "UserLeft",
    "Welcome",
    "connect",
]

RETRY_CODES = frozenset({1001, 1006, 1011, 1013, 4408})
"""Close codes after which ``reconnect=True`` connects again."""


class ConnectionClosed(Exception):
    """The connection closed: the server closed it, or it broke (code 1006)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionFailed(ConnectionError):
    """The connection could not be opened; ``__cause__`` is the underlying error."""


class HandshakeRejected(ConnectionFailed):
    """The server answered the WebSocket upgrade with an HTTP error.

    ``status_code`` (403 origin not allowed, 404 wrong path, 429 too many
    connections from this address, 503 full or shutting down), and the
    server's ``error`` code and message when it sent its JSON body.
    """

    def __init__(self, url: str, status_code: int, body: bytes) -> None:
        try:
            decoded = msgspec.json.decode(body)
        except msgspec.DecodeError:
            decoded = None
        self.status_code = status_code
        self.error: str | None = None
        message = body.decode(errors="replace").strip()[:200]
        if isinstance(decoded, dict):
            self.error = str(decoded.get("error")) if "error" in decoded else None
            message = str(decoded.get("message", message))
        super().__init__(f"{url} refused the WebSocket upgrade: HTTP {status_code}: {message}")


class ConnectTimeout(ConnectionFailed, TimeoutError):
    """The connection, its WebSocket handshake or ``auth`` took longer than ``open_timeout``."""


class RequestTimeout(TimeoutError):
    """No reply to a request within its timeout (the connection stays open)."""


@dataclass(frozen=True)
class Reconnected:
    """Yielded by `Client.receive` after ``reconnect=True`` connected again.

    ``resumed``: the server kept this connection's seats (protocol/SPEC.md
    §10); the others noticed nothing, ``welcome.sessions`` are the sessions it
    is back in, and the frames held for it follow this event, in order. Calls
    go on as they were.

    Not resumed (the window was over, or resume is off): ``sessions`` is the
    ``session-joined`` reply for each session re-joined. The others heard this
    user leave and join again, so calls are set up anew.
    """

    welcome: Welcome
    sessions: list[SessionJoined]
    resumed: bool = False


class _WatchedStream(trio.abc.Stream):
    """The socket stream under trio-websocket, so we can tell why it ended and cut it."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ended = trio.Event()
        self.cause: BaseException | None = None
        self.lost = ""
        """Why the keepalive cut it, when it did."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.stream.receive_some(max_bytes)
        except BaseException as exc:
            self.cause = exc
            self.ended.set()
            raise
        if not data:
            self.ended.set()
        return data

    async def send_eof(self) -> None:
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is not None:
            await send_eof()

    async def aclose(self) -> None:
        self.ended.set()
        await self.stream.aclose()


@dataclass
class _Options:
    url: str
    subprotocol: str
    user_id: str
    token: str | None
    get_token: Callable[[], Awaitable[str]] | None
    open_timeout: float
    ssl_context: ssl.SSLContext | None
    keepalive: float | None
    open_stream: Callable[[str, int], Awaitable[trio.abc.Stream]]


class Client:
    """An authenticated connection. Create it with `connect`."""

    def __init__(
        self,
        options: _Options,
        *,
        request_timeout: float | None = 10.0,
        reconnect: bool = False,
        min_delay: float = 0.5,
        max_delay: float = 10.0,
    ) -> None:
        self._options = options
        self._codec = SERVER_CODECS[options.subprotocol]
        self._ids = itertools.count(1)
        self._pending: dict[str, trio.MemorySendChannel[ServerFrame]] = {}
        self._frames_in, self._frames_out = trio.open_memory_channel[ServerFrame | Reconnected](
            math.inf
        )
        self._closed: ConnectionClosed | None = None
        self._closing = False
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._stream: _WatchedStream | None = None
        self._up = trio.Event()
        self._gone = trio.Event()
        self.request_timeout = request_timeout
        """Seconds `request` (and so `join`, `leave`) waits for a reply; None: no limit."""
        self.reconnect = reconnect
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.sessions: set[str] = set()
        """The sessions joined (re-joined after a reconnect)."""
        self.welcome: Welcome | None = None
        """The server's latest ``welcome`` frame."""

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

    @property
    def connected(self) -> bool:
        """True while authenticated over an open connection (not while reconnecting)."""
        return self._up.is_set() and self._closed is None

    # --- sending -------------------------------------------------------------------

    async def send(self, frame: ClientFrame) -> None:
        """Send one frame as it is."""
        await self.send_raw(self._codec.encode(frame))

    async def send_raw(self, message: bytes | str) -> None:
        """Send one WebSocket message as given (text for JSON, binary for MessagePack).

        While reconnecting it waits for the new connection (up to ``request_timeout``).
        """
        if self._codec.text and isinstance(message, bytes):
            message = message.decode()
        if not self._up.is_set() and self._closed is None:
            with trio.move_on_after(_limit(self.request_timeout)):
                await self._up.wait()
        if self._closed is not None:
            raise self._closed
        ws = self._ws
        if ws is None or not self._up.is_set():
            raise ConnectionClosed(1006, "reconnecting")
        try:
            await ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed_error(exc) from exc

    async def request(self, frame: ClientFrame) -> ServerFrame:
        """Send ``frame`` with a fresh ``id`` and wait for the reply that names it.

        Raises the `signaling.errors.SignalingError` subclass of an ``error`` reply,
        or `RequestTimeout` after `request_timeout` seconds. (For another limit on
        one call, set `request_timeout` to None and wrap the call in
        ``trio.fail_after``, as trio does everywhere.)
        """
        frame_id = f"r{next(self._ids)}"
        frame = msgspec.structs.replace(frame, id=frame_id)
        send, receive = trio.open_memory_channel[ServerFrame](1)
        self._pending[frame_id] = send
        limit = self.request_timeout
        try:
            with trio.move_on_after(_limit(limit)):
                await self.send(frame)
                try:
                    reply = await receive.receive()
                except trio.EndOfChannel:
                    raise self._closed or ConnectionClosed(1006, "connection lost") from None
                if isinstance(reply, Error):
                    raise _error(reply)
                return reply
            raise RequestTimeout(f"no reply to {type(frame).__name__} within {limit:g} s")
        finally:
            self._pending.pop(frame_id, None)

    async def join(self, session_id: str) -> SessionJoined:
        """Join a session; returns ``session-joined`` with the participants already there."""
        reply = await self.request(JoinSession(session_id=session_id))
        assert isinstance(reply, SessionJoined)
        self.sessions.add(session_id)
        return reply

    async def leave(self, session_id: str) -> SessionLeft:
        """Leave a session."""
        reply = await self.request(LeaveSession(session_id=session_id))
        assert isinstance(reply, SessionLeft)
        self.sessions.discard(session_id)
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

    async def receive(self) -> ServerFrame | Reconnected:
        """The next frame that is not a reply to `request` (or a `Reconnected` event);
        raises `ConnectionClosed` once the connection is closed for good."""
        try:
            return await self._frames_out.receive()
        except trio.EndOfChannel:
            assert self._closed is not None
            raise self._closed from None

    def __aiter__(self) -> AsyncIterator[ServerFrame | Reconnected]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ServerFrame | Reconnected]:
        while True:
            try:
                yield await self.receive()
            except ConnectionClosed:
                return

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (for good: no reconnect)."""
        self._closing = True
        if self._ws is not None:
            with trio.move_on_after(2):
                await self._ws.aclose(code, reason)
        if self._stream is not None:
            await self._stream.aclose()

    async def wait_closed(self) -> ConnectionClosed:
        """Wait until the connection is closed for good; returns why (as `closed`)."""
        await self._gone.wait()
        assert self._closed is not None
        return self._closed

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection closed for good, once it has (set by the background
        reader as soon as it happens: no need to call `receive`)."""
        return self._closed

    # --- the background tasks ------------------------------------------------------------

    async def _open(self, nursery: trio.Nursery, resume: str | UnsetType = UNSET) -> None:
        """Open, authenticate (asking to resume with ``resume``); on success the
        connection is this client's."""
        options = self._options
        token = await options.get_token() if options.get_token is not None else options.token
        ws, stream = await _open_websocket(nursery, options)
        try:
            with trio.move_on_after(options.open_timeout) as slow:
                auth = Auth(
                    user_id=options.user_id,
                    token=UNSET if token is None else token,
                    resume=resume,
                )
                await ws.send_message(_as_message(self._codec.text, self._codec.encode(auth)))
                first = self._codec.decode(await ws.get_message())
            if slow.cancelled_caught:
                raise ConnectTimeout(
                    f"no answer to auth from {options.url} within {options.open_timeout:g} s"
                )
            if isinstance(first, Error):
                raise _error(first)
            if not isinstance(first, Welcome):
                raise ConnectionClosed(1002, f"expected welcome, got {type(first).__name__}")
        except trio_websocket.ConnectionClosed as exc:
            await stream.aclose()
            closed = _closed_error(exc)
            raise ConnectionFailed(
                f"{options.url} closed the connection during auth ({closed.code} {closed.reason})"
            ) from exc
        except BaseException:
            await stream.aclose()
            raise
        self._ws, self._stream, self.welcome = ws, stream, first

    async def _serve(self, nursery: trio.Nursery) -> None:
        """Read the current connection; reconnect when asked and it dropped."""
        attempt = 0
        try:
            while True:
                assert self._ws is not None
                assert self._stream is not None
                closed = await self._read(self._ws, self._stream)
                self._up = trio.Event()
                for waiter in self._pending.values():
                    waiter.close()
                self._pending.clear()
                if self._closing or not self.reconnect or closed.code not in RETRY_CODES:
                    self._closed = closed
                    return
                while True:  # connect again, with backoff, until it works or cannot
                    # the first try soon (a resume window is short; a little
                    # jitter spreads a node's clients), then with backoff
                    if attempt:
                        delay = min(self.max_delay, self.min_delay * 2 ** (attempt - 1))
                    else:
                        delay = self.min_delay / 5
                    attempt += 1
                    await trio.sleep(delay * (0.5 + random.random() / 2))
                    resume = self.welcome.resume_token if self.welcome is not None else UNSET
                    try:
                        await self._open(nursery, resume)
                    except (ConnectionFailed, ConnectionClosed) as exc:
                        if isinstance(exc, HandshakeRejected) and exc.status_code not in (429, 503):
                            self._closed = ConnectionClosed(closed.code, str(exc))
                            return
                        continue
                    except SignalingError as exc:  # auth refused: a new token will not come
                        self._closed = ConnectionClosed(4401, str(exc))
                        return
                    break
                attempt = 0
                assert self.welcome is not None
                if self.welcome.resumed is True:
                    # back in its sessions; the held frames follow this event
                    self.sessions = set(self.welcome.sessions or ())
                    self._frames_in.send_nowait(Reconnected(self.welcome, [], resumed=True))
                    self._up.set()
                    continue
                self._up.set()
                nursery.start_soon(self._rejoin)
        finally:
            if self._closed is None:
                self._closed = ConnectionClosed(1006, "connection lost")
            self._up.set()  # wake senders: they raise `closed`
            self._frames_in.close()
            self._gone.set()

    async def _rejoin(self) -> None:
        joined = []
        for session_id in sorted(self.sessions):
            try:
                joined.append(await self.join(session_id))
            except SignalingError:
                self.sessions.discard(session_id)
            except (ConnectionClosed, RequestTimeout):
                return  # dropped again: the next reconnect re-joins
        assert self.welcome is not None
        self._frames_in.send_nowait(Reconnected(self.welcome, joined))

    async def _read(
        self, ws: trio_websocket.WebSocketConnection, stream: _WatchedStream
    ) -> ConnectionClosed:
        decode = self._codec.decode
        try:
            async with trio.open_nursery() as nursery:
                if self._options.keepalive:
                    nursery.start_soon(self._keepalive, ws, stream, self._options.keepalive)
                try:
                    while True:
                        message = await ws.get_message()
                        frame = decode(message)
                        reply_to = getattr(frame, "reply_to", UNSET)
                        if reply_to is not UNSET:
                            waiter = self._pending.pop(reply_to, None)
                            if waiter is not None:
                                waiter.send_nowait(frame)
                                continue
                        if isinstance(frame, Error) and frame.code == "replaced":
                            self.sessions.discard(frame.session_id or "")
                        self._frames_in.send_nowait(frame)
                except trio_websocket.ConnectionClosed as exc:
                    closed = _closed_error(exc)
                    if stream.lost:
                        closed = ConnectionClosed(1006, stream.lost)
                    return closed
                finally:
                    nursery.cancel_scope.cancel()
        except msgspec.DecodeError as exc:
            await stream.aclose()
            return ConnectionClosed(1002, f"undecodable frame from the server: {exc}")

    async def _keepalive(
        self, ws: trio_websocket.WebSocketConnection, stream: _WatchedStream, interval: float
    ) -> None:
        """Ping the server every ``interval`` seconds; cut a connection whose server
        does not answer within another ``interval`` (gone without a FIN)."""
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval) as slow:
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return
            if slow.cancelled_caught:
                stream.lost = f"the server did not answer a ping within {interval:g} s"
                await stream.aclose()
                return


def _limit(seconds: float | None) -> float:
    return math.inf if seconds is None else seconds


def _as_message(text: bool, data: bytes) -> bytes | str:
    return data.decode() if text else data


def _closed_error(exc: trio_websocket.ConnectionClosed) -> ConnectionClosed:
    reason = exc.reason
    code = 1006 if reason is None else reason.code
    return ConnectionClosed(code, (reason.reason or "") if reason else "")


def _error(frame: Error) -> SignalingError:
    return error_class(frame.code)(
        frame.message, session_id=frame.session_id, retry_after_ms=frame.retry_after_ms
    )


class _Opening:
    """Where a connection's own task reports how its WebSocket handshake went."""

    def __init__(self) -> None:
        self.ws: trio_websocket.WebSocketConnection | None = None
        self.error: BaseException | None = None
        self.settled = trio.Event()
        self.scope: trio.CancelScope | None = None


async def _run_websocket(
    stream: _WatchedStream, host: str, resource: str, subprotocol: str, opening: _Opening
) -> None:
    """Hold a connection's trio-websocket tasks in a nursery of their own.

    trio-websocket raises a refused upgrade (`ConnectionRejected`) in its
    reader task, and waits forever for a handshake on a stream that ended
    before it: here both become a report in ``opening``, never an error
    in the client's nursery.
    """
    try:
        async with trio.open_nursery() as own:
            opening.scope = own.cancel_scope

            async def handshake() -> None:
                opening.ws = await trio_websocket.wrap_client_stream(
                    own,
                    stream,  # type: ignore[arg-type]
                    host,
                    resource,
                    subprotocols=[subprotocol],
                    message_queue_size=0,
                )
                opening.settled.set()

            async def ended() -> None:
                await stream.ended.wait()
                if opening.ws is None:  # closed before the handshake finished
                    own.cancel_scope.cancel()

            own.start_soon(handshake)
            own.start_soon(ended)
    except BaseExceptionGroup as group:
        leaf = _single(group)
        if isinstance(leaf, trio.Cancelled):
            raise
        opening.error = leaf
    except Exception as exc:
        opening.error = exc
    finally:
        opening.settled.set()


def _os_reason(exc: BaseException) -> str:
    """The most specific reason an OSError (or trio's group of them) carries."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[0]
            continue
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__
    return str(exc)


async def _open_websocket(
    nursery: trio.Nursery, options: _Options
) -> tuple[trio_websocket.WebSocketConnection, _WatchedStream]:
    """TCP, TLS and the WebSocket handshake, each failure mapped to our exceptions."""
    url = options.url
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConnectionFailed(f"{url!r} is not a ws:// or wss:// URL")
    secure = parts.scheme == "wss"
    host = parts.hostname
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = f"[{host}]" if ":" in host else host
    if port != (443 if secure else 80):
        host_header += f":{port}"
    timeout = ConnectTimeout(f"no WebSocket handshake with {url} within {options.open_timeout:g} s")
    deadline = trio.current_time() + options.open_timeout
    with trio.move_on_at(deadline):
        try:
            tcp: trio.abc.Stream = await options.open_stream(host, port)
        except OSError as exc:
            raise ConnectionFailed(f"cannot connect to {host}:{port}: {_os_reason(exc)}") from exc
    if trio.current_time() >= deadline:
        raise timeout
    if secure:
        tls = trio.SSLStream(
            tcp, options.ssl_context or ssl.create_default_context(), server_hostname=host
        )
        with trio.move_on_at(deadline):
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                await tcp.aclose()
                cause = exc.__cause__ or exc
                reason = getattr(cause, "verify_message", None) or str(cause)
                raise ConnectionFailed(
                    f"TLS handshake with {host}:{port} failed: {reason}"
                ) from cause
        if trio.current_time() >= deadline:
            await tcp.aclose()
            raise timeout
        tcp = tls
    stream = _WatchedStream(tcp)
    opening = _Opening()
    nursery.start_soon(_run_websocket, stream, host_header, resource, options.subprotocol, opening)
    with trio.move_on_at(deadline):
        await opening.settled.wait()
    if opening.ws is not None:
        return opening.ws, stream
    if opening.scope is not None:
        opening.scope.cancel()
    await stream.aclose()
    error = opening.error
    if isinstance(error, trio_websocket.ConnectionRejected):
        raise HandshakeRejected(url, error.status_code, error.body or b"") from error
    if error is not None:
        raise ConnectionFailed(f"WebSocket handshake with {url} failed: {error}") from error
    if not opening.settled.is_set():
        raise timeout
    hint = " (is it a wss:// server?)" if not secure else ""
    raise ConnectionFailed(
        f"{host}:{port} closed the connection before the WebSocket handshake{hint}"
    ) from stream.cause


@asynccontextmanager
async def connect(
    url: str,
    *,
    user_id: str,
    token: str | None = None,
    get_token: Callable[[], Awaitable[str]] | None = None,
    encoding: Literal["json", "msgpack"] = "json",
    open_timeout: float = 10.0,
    request_timeout: float | None = 10.0,
    keepalive: float | None = 20.0,
    reconnect: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    open_stream: Callable[[str, int], Awaitable[trio.abc.Stream]] | None = None,
) -> AsyncIterator[Client]:
    """Open, authenticate, and yield a `Client`; closes it on exit.

    - ``token`` or ``get_token`` (asked on every (re)connect: tokens expire);
    - ``open_timeout``: for the TCP, TLS and WebSocket handshakes, and again for ``auth``;
    - ``request_timeout``: the default of `Client.request`;
    - ``keepalive``: ping the server this often and count it gone when a ping
      is not answered within as long again (None: never);
    - ``reconnect``: see the module's documentation;
    - ``ssl_context``: which certificates to trust for ``wss://`` (default: the system's);
    - ``open_stream``: opens the byte stream to the URL's host and port
      (default `trio.open_tcp_stream`; a test passes a server's
      ``MemoryListener.connect``, an app may pass a proxy's or a Unix socket's).

    Raises `ConnectionFailed` (`HandshakeRejected`, `ConnectTimeout`) or the
    `SignalingError` of a refused ``auth``.
    """
    subprotocol = JSON_SUBPROTOCOL if encoding == "json" else MSGPACK_SUBPROTOCOL
    options = _Options(
        url,
        subprotocol,
        user_id,
        token,
        get_token,
        open_timeout,
        ssl_context,
        keepalive,
        open_stream or trio.open_tcp_stream,
    )
    client = Client(options, request_timeout=request_timeout, reconnect=reconnect)
    try:
        async with trio.open_nursery() as nursery:
            await client._open(nursery)
            client._up.set()
            nursery.start_soon(client._serve, nursery)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaf = _single(group)
        raise leaf from leaf.__cause__  # the error itself, with its own cause


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested single-member groups, else the group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
