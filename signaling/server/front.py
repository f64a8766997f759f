"""The front door of the one public port.

It reads the HTTP request head of each new TCP connection. A WebSocket
upgrade to ``/ws`` is answered here and served by the lean transport
(`signaling.server.transports.ws`); everything else is handed, bytes already read
included, to hypercorn, which serves the Quart routes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from hypercorn.trio.tcp_server import TCPServer

from .handoff import hand_off
from .handshake import Refusal, check_upgrade, client_ip, negotiate, origin_refusal
from .http1 import HeadError, Request, find_head_end, json_response, parse_head
from .replay import Replay, TlsReplay
from .transports.socketio import SocketIOTransport, upgrade_polling
from .transports.ws import RECEIVE_SIZE, LeanTransport
from .websocket import Deflate, switching_protocols

if TYPE_CHECKING:
    import ssl

    from hypercorn.config import Config
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import AppWrapper, LifespanState

    from .connection import Connection
    from .handoff import Workers
    from .hub import Hub
    from .transports.base import Transport
    from .transports.polling import PollingChannel

__all__ = ["FrontDoor"]

log = logging.getLogger("signaling.front")

HEAD_TIMEOUT = 10.0
WS_PATH = "/ws"
SOCKETIO_PATH = "/socket.io/"


class FrontDoor:
    """Accepts TCP connections and routes each to /ws or to hypercorn."""

    def __init__(
        self,
        hub: Hub,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        state: LifespanState,
        ssl_context: ssl.SSLContext | None = None,
        workers: Workers | None = None,
        polling: dict[str, PollingChannel] | None = None,
    ) -> None:
        self.hub = hub
        self.polling = {} if polling is None else polling
        """Engine.IO long-polling sessions by sid (the app's table: `create_app`)."""
        self._ssl = ssl_context
        self._workers = workers
        self._app = app
        self._config = config
        self._context = context
        self._state = state

    async def handle(self, socket_stream: trio.SocketStream) -> None:
        """Serve one accepted TCP connection (TLS first, when configured)."""
        await self._serve(socket_stream, b"", handed=False)

    async def serve_handed(
        self, stream: trio.abc.Stream, prefix: bytes, ip: str, remote: str
    ) -> None:
        """Serve a connection another worker handed over (`signaling.server.handoff`):
        ``prefix`` is what that worker read of it; TLS, if any, stayed there."""
        assert isinstance(stream, trio.SocketStream)
        log.debug("serving a request for this worker's session from %s (%s)", ip, remote)
        await self._serve(stream, prefix, handed=True)

    async def _serve(
        self, socket_stream: trio.SocketStream, prefix: bytes, *, handed: bool
    ) -> None:
        stream: trio.abc.Stream = socket_stream
        try:
            head = None
            with trio.move_on_after(HEAD_TIMEOUT):
                if self._ssl is not None and not handed:
                    tls = trio.SSLStream(
                        socket_stream, self._ssl, server_side=True, https_compatible=True
                    )
                    await tls.do_handshake()
                    stream = tls
                head, rest = await self._read_head(stream, prefix)
            if head is None:
                await stream.aclose()
                return
            try:
                request = parse_head(head)
            except HeadError as exc:
                await self._refuse(stream, exc.status, exc.error, exc.message)
                return
            if await self._hand_off(request, stream, socket_stream, head + rest, handed):
                return
            if request.wants_upgrade or "upgrade" in request.tokens("connection"):
                # Every upgrade is decided here, whatever its path: hypercorn never
                # sees one (it would speak WebSocket or h2c on its own terms).
                connection = await self._upgrade(request, stream, socket_stream, rest)
                if connection is not None:
                    # The head, its fields and the frames that parsed them would live
                    # as long as the connection in this frame: let them go first
                    # (about 2 KiB of every idle connection).
                    del request, head, rest, prefix
                    await connection.run()
                return
            replay = (
                TlsReplay(stream, head + rest)
                if isinstance(stream, trio.SSLStream)
                else Replay(stream, head + rest, socket_stream)
            )
            await TCPServer(
                self._app,
                self._config,
                self._context,
                self._state.copy(),
                replay,  # type: ignore[arg-type]
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            with trio.CancelScope(shield=True):
                await stream.aclose()
        except Exception:
            # A bug in one connection must never take the node down.
            log.exception("connection from %s failed", _remote(socket_stream))
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read_head(
        self, stream: trio.abc.Stream, buffer: bytes
    ) -> tuple[bytes | None, bytes]:
        """The request head and the bytes after it; None (answered) for a bad one."""
        while True:
            try:
                end = find_head_end(buffer)
            except HeadError as exc:
                await self._refuse(stream, exc.status, exc.error, exc.message)
                return None, b""
            if end is not None:
                return buffer[:end], buffer[end:]
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                return None, b""
            buffer += data

    async def _refuse(
        self, stream: trio.abc.Stream, status: int, error: str, message: str, headers: str = ""
    ) -> None:
        """Answer with a JSON error (``headers``: extra header lines) and close."""
        self.hub.stats.upgrades_refused[error] += 1
        with trio.move_on_after(HEAD_TIMEOUT):
            await stream.send_all(
                json_response(status, {"error": error, "message": message}, headers)
            )
        await stream.aclose()

    async def _hand_off(
        self,
        request: Request,
        stream: trio.abc.Stream,
        socket_stream: trio.SocketStream,
        read: bytes,
        handed: bool,
    ) -> bool:
        """With ``--workers``: pass a request for another worker's Engine.IO session to it."""
        if handed or self._workers is None or request.path != SOCKETIO_PATH:
            return False
        sid = request.query_value("sid")
        owner = None if sid is None else self._workers.owner(sid)
        if owner is None or owner == self._workers.index:
            return False
        remote = _remote(socket_stream)
        return await hand_off(self._workers, owner, stream, read, _peer_ip(socket_stream), remote)

    async def _upgrade(
        self,
        request: Request,
        stream: trio.abc.Stream,
        socket_stream: trio.SocketStream,
        rest: bytes,
    ) -> Connection | None:
        """A request to switch protocols: our WebSocket endpoints, or a refusal.

        Returns the accepted connection for the caller to run (None: refused,
        or an Engine.IO upgrade, served here).
        """
        if not request.wants_websocket:
            await self._refuse(
                stream, 400, "upgrade-not-supported", "only WebSocket upgrades are served here"
            )
            return None
        if request.method != "GET" or request.version != "HTTP/1.1":
            await self._refuse(
                stream, 400, "bad-upgrade", "a WebSocket upgrade is a GET over HTTP/1.1"
            )
            return None
        if request.path == WS_PATH:
            return await self._websocket(stream, socket_stream, request.headers, rest)
        if (
            request.path == SOCKETIO_PATH
            and request.query_value("EIO") == "4"
            and request.query_value("transport") == "websocket"
        ):
            sid = request.query_value("sid")
            if sid is None:
                return await self._websocket(
                    stream, socket_stream, request.headers, rest, socketio=True
                )
            await self._socketio_upgrade(stream, request.headers, rest, sid)
            return None
        await self._refuse(
            stream,
            404,
            "not-found",
            f"no WebSocket endpoint at {request.path!r}: use {WS_PATH} "
            f"(or {SOCKETIO_PATH}?EIO=4&transport=websocket)",
        )
        return None

    async def _socketio_upgrade(
        self, stream: trio.abc.Stream, headers: dict[str, list[str]], rest: bytes, sid: str
    ) -> None:
        """Engine.IO's upgrade of a polling session to WebSocket (2probe, 3probe, 5).

        One upgrade per session at a time, under the same Origin rule as its
        first request; the probe must finish within `HEAD_TIMEOUT`, and a
        client that breaks RFC 6455 during it gets its close code.
        """
        settings = self.hub.settings
        channel = self.polling.get(sid)
        refusal = check_upgrade(headers) or origin_refusal(
            headers.get("origin", [None])[0],
            settings.allowed_origins,
            allow_missing_origin=settings.allow_no_origin,
        )
        if refusal is None and (channel is None or channel.owner is None or channel.closed):
            refusal = Refusal(400, "session-unknown", "unknown Engine.IO session id")
        if refusal is None and channel is not None and channel.upgrading:
            refusal = Refusal(400, "bad-upgrade", "this Engine.IO session is upgrading already")
        if refusal is not None or channel is None or channel.owner is None:
            assert refusal is not None
            await self._refuse(stream, refusal.status, refusal.error, refusal.message)
            return
        channel.upgrading = True
        try:
            await upgrade_polling(
                stream,
                headers["sec-websocket-key"][0],
                rest,
                channel,
                max_message=settings.max_message_bytes,
                probe_limit=HEAD_TIMEOUT,
                upgraded=lambda: self.polling.pop(sid, None),
            )
        finally:
            channel.upgrading = False

    async def _websocket(
        self,
        stream: trio.abc.Stream,
        socket_stream: trio.SocketStream,
        headers: dict[str, list[str]],
        rest: bytes,
        *,
        socketio: bool = False,
    ) -> Connection | None:
        refusal = check_upgrade(headers)
        origin = headers.get("origin", [None])[0]
        settings = self.hub.settings
        ip = client_ip(
            _peer_ip(socket_stream), headers.get("x-forwarded-for", []), settings.trusted_proxies
        )
        refusal = refusal or self.hub.admit(ip)
        negotiated = refusal or negotiate(
            [] if socketio else headers.get("sec-websocket-protocol", []),
            origin,
            settings.allowed_origins,
            allow_missing_origin=settings.allow_no_origin,
        )
        if isinstance(negotiated, Refusal):
            extra = "Sec-WebSocket-Version: 13\r\n" if negotiated.status == 426 else ""
            log.info("refused upgrade from %s: %s", ip, negotiated.message)
            await self._refuse(
                stream, negotiated.status, negotiated.error, negotiated.message, extra
            )
            return None
        codec, subprotocol = negotiated
        accepted = ""  # the 101's header lines beyond the accept key
        if subprotocol is not None:
            accepted += f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
        deflate = None
        if settings.permessage_deflate:
            deflate = Deflate.negotiate(headers.get("sec-websocket-extensions", []))
            if deflate is not None:
                accepted += f"Sec-WebSocket-Extensions: {deflate.response}\r\n"
        transport: Transport = LeanTransport(
            stream,
            text=codec.text,
            max_message=settings.max_message_bytes,
            pending=rest,
            deflate=deflate,
        )
        if socketio:
            transport = SocketIOTransport(
                transport,  # type: ignore[arg-type]
                ping_interval=settings.ping_interval,
                ping_timeout=settings.ping_timeout,
                max_payload=settings.max_message_bytes,
            )
        remote = _remote(socket_stream)
        connection = self.hub.open(transport, codec, ip, remote if ip in remote else ip)
        try:
            await stream.send_all(switching_protocols(headers["sec-websocket-key"][0], accepted))
        except BaseException:
            self.hub.remove(connection)
            raise
        return connection


LOCAL = "local"
"""The client address of a connection over a Unix socket (a `MemoryListener`'s)."""


def _peer_name(stream: trio.SocketStream) -> tuple[str, int] | str:
    """The peer's (address, port); `LOCAL` over a Unix socket, "?" once it is gone."""
    try:
        name = stream.socket.getpeername()
    except OSError:
        return "?"
    return (str(name[0]), int(name[1])) if isinstance(name, tuple) else LOCAL


def _peer_ip(stream: trio.SocketStream) -> str:
    name = _peer_name(stream)
    return name[0] if isinstance(name, tuple) else name


def _remote(stream: trio.SocketStream) -> str:
    name = _peer_name(stream)
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else name
