"""One WebSocket connection: a nursery with a reader task and a writer task.

The reader decodes each message, applies the core's rules and routes the
resulting frames straight into the receivers' outboxes, with no task hop in
between. The writer sleeps until its outbox has something, then writes all of
it at once. Closing is one path for every reason: `Connection.close` records
the code, the writer flushes what is queued and sends the close frame, the
reader waits (bounded) for the client's answer, and ``finally`` frees the
seats so the others hear ``user-left`` exactly once, or, when the client did
not close with 1000, lets them wait for its resume (protocol/SPEC.md §10:
`Hub.go_away`, `signaling.core.resume`).
"""

from __future__ import annotations

import logging
import math
import secrets
from typing import TYPE_CHECKING, Any, Protocol

import trio
from msgspec import UNSET

from ..codec import SERVER_CODECS, probe_id
from ..core import FloodWatch, Peer
from ..core.lifecycle import ClosedBy, Lifecycle, token_expired
from ..errors import BadFrame, CloseCode, Forbidden, RateLimited, SignalingError, Unauthorized
from ..frames import (
    Auth,
    Error,
    JoinSession,
    LeaveSession,
    RelayedAnswer,
    RelayedIceCandidate,
    RelayedOffer,
    UserJoined,
    UserLeft,
    Welcome,
)
from .outbox import Outbox
from .websocket import ProtocolError

if TYPE_CHECKING:
    from collections import Counter

    from msgspec import UnsetType

    from ..codec import Codec
    from ..core import RateLimiter, Registry, TokenBucket
    from ..core.resume import Away
    from ..frames import ClientFrame, ServerFrame
    from .auth import Authenticator, Authorizer, Identity
    from .config import Settings
    from .ice import IceServersProvider
    from .stats import Stats
    from .transports.base import Transport

__all__ = ["CLOSE_TIMEOUT", "Connection"]

log = logging.getLogger("signaling.connection")

CLOSE_TIMEOUT = 2.0
"""Seconds a closing connection may take to flush and finish the handshake."""


class ClusterLink(Protocol):
    """What a connection asks of the other nodes (`signaling.server.cluster.Cluster`)."""

    async def join(self, connection: Connection, frame: JoinSession) -> None:
        """Take a seat through the shared directory, then here."""
        ...

    def leaving(self, peer: Peer, sessions: list[str]) -> None:
        """``peer`` left ``sessions``: free its seats for the other nodes."""
        ...

    def holds_elsewhere(self, token: str) -> bool:
        """Whether a resume token names a connection of another node."""
        ...

    async def resume(
        self, token: str, user_id: str
    ) -> tuple[str, list[str], list[ServerFrame]] | None:
        """Take over an away connection of another node: its id, sessions, frames."""
        ...

    def installed(self, connection_id: str) -> None:
        """A connection resumed from another node is live here."""
        ...


class Node(Protocol):
    """What a connection uses of the node it lives on (`signaling.server.hub.Hub`):
    named here, so this module needs nothing of the Hub's."""

    # read-only (properties): the Hub's own, narrower types satisfy them
    @property
    def settings(self) -> Settings: ...
    @property
    def stats(self) -> Stats: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def limiter(self) -> RateLimiter: ...
    @property
    def authenticator(self) -> Authenticator: ...
    @property
    def authorizer(self) -> Authorizer: ...
    @property
    def ice(self) -> IceServersProvider: ...
    @property
    def cluster(self) -> ClusterLink | None: ...
    @property
    def by_user(self) -> Counter[str]: ...

    corked: bool
    """Set while one read's frames are applied: relays queue instead of writing at once."""

    def remove(self, connection: Connection) -> None:
        """Forget a connection that has ended."""
        ...

    def user_left(self, user_id: str) -> None:
        """One connection of ``user_id`` fewer."""
        ...

    def new_resume_token(self, connection: Connection) -> str | None:
        """A fresh resume token for a ``welcome`` (None: resume is off)."""
        ...

    def release(self, peer: Peer) -> None:
        """``peer`` leaves its sessions for good, on every node."""
        ...

    def go_away(self, connection: Connection) -> Away | None:
        """Keep the seats of a connection that dropped, for the resume window."""
        ...

    def ended_away(self, connection: Connection) -> None:
        """An away connection's tasks are done (nothing more of its is unsent)."""
        ...

    def claim(self, token: str, user_id: str, claimer: Connection) -> Away | None:
        """The away connection a resume token names, if ``user_id`` may take it."""
        ...

    def rename(self, connection: Connection, connection_id: str) -> None:
        """``connection`` takes over the id of the connection it resumed."""
        ...

    @property
    def resume_window(self) -> float: ...


class Connection:
    """A client connection; it is the `signaling.core.Member` the registry holds."""

    __slots__ = (
        "_direct",
        "_scope",
        "away",
        "bucket",
        "codec",
        "connection_id",
        "flood",
        "hub",
        "identity",
        "ip",
        "lifecycle",
        "outbox",
        "peer",
        "pinged_at",
        "remote",
        "resume_token",
        "transport",
    )

    def __init__(
        self, hub: Node, transport: Transport, codec: Codec[ClientFrame], ip: str, remote: str
    ) -> None:
        self.hub = hub
        self.ip = ip
        self.transport = transport
        self.codec = codec
        self.remote = remote
        self.connection_id = "c_" + secrets.token_urlsafe(9)
        settings = hub.settings
        self.outbox = Outbox(max_frames=settings.outbox_frames, max_bytes=settings.outbox_bytes)
        transport.outbox = self.outbox
        self._direct: bool = getattr(transport, "direct", False)
        """The transport can write from the routing task (`deliver`)."""
        self.peer: Peer | None = None
        self.identity: Identity | None = None
        self.bucket: TokenBucket | None = None
        self.flood = FloodWatch(hub.settings.flood_strikes)
        """Its refused frames: whether it is flooding (protocol/SPEC.md §5 rule 9)."""
        self.pinged_at = -math.inf
        self.lifecycle = Lifecycle()
        """The phase (authenticating, open, closing, closed) and the close code."""
        self._scope: trio.CancelScope | None = None
        self.resume_token: str | None = None
        """The token of its latest ``welcome`` (protocol/SPEC.md §10)."""
        self.away: Away | None = None
        """Set once it ended and its seats wait for a resume."""

    @property
    def user_id(self) -> str | None:
        """The authenticated user, once ``auth`` succeeded."""
        return None if self.peer is None else self.peer.user_id

    def log_ids(self) -> dict[str, str | None]:
        """``extra`` for log calls: this connection's id and user."""
        return {"connection_id": self.connection_id, "user_id": self.user_id}

    # --- delivery (called from any connection's reader task) -----------------

    def deliver(self, frame: ServerFrame) -> None:
        """Send or queue ``frame`` for the client; a client that does not read is closed.

        With nothing queued, a transport that can (`LeanTransport.send_now`)
        writes it at once from the calling task; what the socket does not take
        waits at the head of the queue for the writer. Not while the routing
        task works through a burst (`Hub.corked`): then the writer coalesces.
        """
        # attributes read directly, not through `close_code` and `_count`: this
        # runs for every relayed frame, and each call costs more than the read
        if self.lifecycle.code is not None:
            if self.away is not None:
                self.away.hold(frame)  # routed here before the node forgot this connection
            return
        stats = self.hub.stats
        stats.frames_out[frame.__struct_config__.tag] += 1  # type: ignore[index]
        if type(frame) is Error:
            stats.errors[frame.code] += 1
        message = self.codec.encode(frame)
        outbox = self.outbox
        if self._direct and not self.hub.corked and outbox.idle():
            transport: Any = self.transport
            if not transport.writing:
                rest = transport.send_now(message)
                if rest is None:
                    stats.sent_at_once += 1
                    return
                outbox.put_control(rest)  # framed already, and first in line
                return
        if not outbox.put(message):
            self._overflow()

    def _overflow(self) -> None:
        log.warning(
            "not reading: %d frames (%d bytes) queued; closing",
            len(self.outbox),
            self.outbox.queued_bytes,
            extra=self.log_ids(),
        )
        # closing first: what is queued goes to the hold of a connection that may
        # resume (no silent gap; where it overflows too, its seats go)
        self.close(CloseCode.SLOW_CONSUMER, "outbox full: the client is not reading")
        self.hold_unsent()
        self.outbox.clear()

    @property
    def close_code(self) -> int | None:
        """The close code, once closing."""
        return self.lifecycle.code

    @property
    def close_reason(self) -> str:
        """The close frame's reason, once closing."""
        return self.lifecycle.reason

    def close(self, code: int, reason: str = "", *, by: ClosedBy = "server") -> None:
        """Start closing with ``code``: flush, send the close frame, end within a deadline.

        The first close wins (`signaling.core.lifecycle`); ``by``: "client" when
        this echoes the client's close."""
        if not self.lifecycle.close(code, reason, by=by):
            return
        # Free the seats now, not after the close handshake: the others hear
        # user-left at once even if this client never answers (or, when it may
        # resume, its frames are held from now on).
        self._release_seats(leaving=_leaves(code, by))
        self.outbox.close()
        self._arm_close_deadline()

    def _arm_close_deadline(self) -> None:
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, trio.current_time() + CLOSE_TIMEOUT)

    def _release_seats(self, *, leaving: bool) -> None:
        """The connection ends: its seats go, or (``leaving`` False, resume on) wait
        for the client to come back (protocol/SPEC.md §10)."""
        peer = self.peer
        if peer is None or peer.closed or self.away is not None:
            return
        if not leaving:
            self.away = self.hub.go_away(self)
            if self.away is not None:
                return
        self.hub.release(peer)

    def hold_unsent(self) -> None:
        """An away connection's frames that were queued but never written go to
        the hold, ahead of what came after (at its end, or when a resume claims
        it first): what others sent it (signals,
        ``user-joined``/``user-left``, ``replaced``), not replies to its own
        frames nor the error it was closed with. Frames already written to the
        socket are not sent again."""
        if self.away is None:
            return
        unsent = self.outbox.take_unsent()
        if not unsent:
            return
        decode = SERVER_CODECS[self.codec.subprotocol].decode
        frames: list[ServerFrame] = []
        for message in unsent:
            try:
                frame = decode(message)
            except BadFrame:  # not a frame of ours (a transport's own packet)
                continue
            if type(frame) in _HELD or (type(frame) is Error and frame.code == "replaced"):
                frames.append(frame)
        self.away.hold_first(frames)

    # --- the tasks ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes (`Hub.open` counted it in)."""
        hub = self.hub
        log.info("connected from %s", self.remote, extra=self.log_ids())
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self.close_code is not None:
                    # closed before it ran (a drain racing the accept): `close` set
                    # no deadline then, and a client that never answers would keep
                    # this connection draining for ever
                    self._arm_close_deadline()
                nursery.start_soon(self._write_loop)
                await self._read_loop()
                if self.close_code is None:
                    nursery.cancel_scope.cancel()
                elif self.transport.peer_close is None:
                    await self._drain()
        finally:
            hub.remove(self)
            peer_close = self.transport.peer_close
            code, by = self.lifecycle.ended(None if peer_close is None else peer_close[0])
            hub.stats.closes[code] += 1
            if self.peer is not None:
                self._release_seats(leaving=_leaves(code, by))
                self.hold_unsent()  # what the writer could not write before the end
                if self.away is not None:
                    hub.ended_away(self)
                user_id = self.peer.user_id
                hub.user_left(user_id)
                if self.bucket is not None:
                    hub.limiter.release(user_id)
            # one line for every connection, authenticated or not, with its code
            log.info(
                "disconnected (%d%s, by the %s)",
                code,
                f": {self.close_reason}" if self.close_reason else "",
                by,
                extra={**self.log_ids(), "event": {"close_code": code, "closed_by": by}},
            )
            with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
                await self.transport.aclose()

    async def _write_loop(self) -> None:
        outbox = self.outbox
        transport = self.transport
        stats = self.hub.stats
        try:
            while True:
                messages = await outbox.take()
                control = outbox.take_control()
                if messages or control:
                    oldest = outbox.oldest
                    await transport.send(messages, control)
                    if messages:
                        stats.observe_latency(trio.current_time() - oldest, len(messages))
                if outbox.closed and outbox.idle():
                    break
            assert self.close_code is not None
            await transport.send_close(self.close_code, self.close_reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if self._scope is not None:
                self._scope.cancel()
        except Exception:
            log.exception("writer failed; closing", extra=self.log_ids())
            if self._scope is not None:
                self._scope.cancel()

    async def _read_loop(self) -> None:
        transport = self.transport
        try:
            with trio.move_on_after(self.hub.settings.auth_timeout):
                batch = await transport.receive()
                batch = await self._authenticate(batch)
            if self.peer is None:
                if self.close_code is None and transport.peer_close is not None:
                    self.close(transport.peer_close[0], "", by="client")  # echoed
                elif self.close_code is None:
                    self.close(CloseCode.TIMEOUT, "no auth frame within the auth timeout")
                return
            if hasattr(transport, "inline"):
                # from now on the transport may apply frames as they arrive,
                # without waking this task (`signaling.server.transports.ws`)
                transport.inline = self._consume
            while batch is not None and self.close_code is None:
                batch = self._consume(batch, trio.current_time())
                if batch:
                    # its first frame needs an await (join, re-auth)
                    await self._apply_awaiting(*batch[0])
                    batch = batch[1:]
                    continue
                batch = await transport.receive()
            if transport.peer_close is not None and self.close_code is None:
                self.close(transport.peer_close[0], "", by="client")
        except ProtocolError as exc:
            log.info("closing %d: %s", exc.code, exc.reason, extra=self.log_ids())
            if exc.code == CloseCode.SLOW_CONSUMER:
                self.outbox.clear()
            self.close(exc.code, exc.reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except Exception:
            log.exception("internal error; closing", extra=self.log_ids())
            self.close(CloseCode.INTERNAL, "internal error")

    def _consume(
        self, batch: list[tuple[bool, bytes | str]], now: float
    ) -> list[tuple[bool, bytes | str]]:
        """Apply the frames of ``batch`` (read at ``now``) that need no await; return
        the rest from the first that does (a join, a re-auth), or all of it while
        closing.

        Runs in the reader task or, for a transport that reads inline, in the
        task that read the socket: nothing here awaits.
        """
        lifecycle = self.lifecycle
        if lifecycle.code is not None:
            return batch
        hub = self.hub
        peer = self.peer
        assert peer is not None
        frames_in = hub.stats.frames_in
        # Several messages in one read: let their relays queue, so each
        # receiver's writer sends them in one write (see `deliver`).
        hub.corked = len(batch) > 1
        try:
            for index, (is_text, payload) in enumerate(batch):
                frame, error = self._decode(is_text, payload)
                if lifecycle.code is not None:
                    return []
                kind = type(frame)
                if kind is JoinSession or kind is Auth:
                    return batch[index:]  # its token is taken where it is applied
                if not self._admit(frame, error, now):
                    if lifecycle.code is not None:
                        return []
                    continue
                assert frame is not None
                frames_in[frame.__struct_config__.tag] += 1  # type: ignore[index]
                if kind is LeaveSession and frame.session_id in peer.sessions:  # type: ignore[union-attr]
                    self._leave(frame.session_id, frame)  # type: ignore[union-attr,arg-type]
                else:
                    peer.handle(frame)
        finally:
            hub.corked = False
        return []

    async def _apply_awaiting(self, is_text: bool, payload: bytes | str) -> None:
        """Apply one frame that needs an await: ``join-session`` or a re-``auth``."""
        frame, error = self._decode(is_text, payload)
        if self.close_code is not None or not self._admit(frame, error, trio.current_time()):
            return
        self.hub.stats.frames_in[frame.__struct_config__.tag] += 1  # type: ignore[union-attr,index]
        if type(frame) is JoinSession:
            await self._join(frame)
        elif type(frame) is Auth:
            await self._reauth(frame)

    def _admit(self, frame: ClientFrame | None, error: Error | None, now: float) -> bool:
        """Take the frame's rate token and answer a refused or invalid frame: False then.

        Every message takes a token, a bad one too: a flood of invalid frames
        is a flood, and each gets its answer.
        """
        if self.bucket is not None:
            wait = self.bucket.take(now)
            if wait:
                reply_to = frame.id if frame is not None else error.reply_to  # type: ignore[union-attr]
                self._refuse(reply_to, wait, now)
                return False
        if frame is None:
            if error is not None:
                self._deliver_now(error)
            return False
        return True

    async def _drain(self) -> None:
        """After our close frame: read until the client's close frame or EOF."""
        try:
            while await self.transport.receive() is not None:
                pass
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _authenticate(
        self, batch: list[tuple[bool, bytes | str]] | None
    ) -> list[tuple[bool, bytes | str]] | None:
        """Handle the first frame (protocol/SPEC.md §2); return the rest."""
        if not batch:
            return None
        is_text, payload = batch[0]
        frame, error = self._decode(is_text, payload)
        if frame is None:
            if self.close_code is None:
                if error is not None:
                    self._deliver_now(error)
                self.close(CloseCode.UNAUTHORIZED, "the first frame must be a valid auth frame")
            return None
        self.hub.stats.frames_in[frame.__struct_config__.tag] += 1  # type: ignore[index]
        try:
            if type(frame) is not Auth:
                raise Unauthorized("the first frame must be auth")
            identity = await self.hub.authenticator.authenticate(frame)
        except SignalingError as exc:
            self._answer(exc, frame.id, close=CloseCode.UNAUTHORIZED)
            return None
        if self.close_code is not None:
            return None  # closed while the token was checked (the node is draining)
        user_id = identity.user_id
        self.identity = identity
        limit = self.hub.settings.max_connections_per_user
        if limit and self.hub.by_user[user_id] >= limit:
            message = f"{user_id!r} has {limit} connections open already"
            self._answer(Forbidden(message), frame.id, close=CloseCode.TOO_MANY_CONNECTIONS)
            return None
        self.hub.by_user[user_id] += 1
        self.lifecycle.authenticated()
        self.peer = Peer(self.hub.registry, self.connection_id, user_id, self.deliver)
        self.bucket = self.hub.limiter.acquire(user_id, trio.current_time())
        ice_servers = await self.hub.ice.ice_servers(user_id)
        if self.close_code is not None:
            return None  # closed meanwhile: a token to resume stays unclaimed
        away = None
        moved: tuple[str, list[str], list[ServerFrame]] | None = None
        cluster = self.hub.cluster
        if (
            frame.resume is not UNSET
            and cluster is not None
            and cluster.holds_elsewhere(frame.resume)
        ):
            # held by another node: it hands the connection over (a few ms)
            moved = await cluster.resume(frame.resume, user_id)
            self.hub.stats.resumes["resumed" if moved is not None else "refused"] += 1
        elif frame.resume is not UNSET:
            # from here to the welcome nothing awaits: a claimed peer's frames are
            # held until the held ones go out, then come straight here
            away = self.hub.claim(frame.resume, user_id, self)
        held: list[ServerFrame] = []
        if away is not None:
            self.peer = away.peer  # the fresh one, never seated, is dropped
            self.hub.rename(self, away.peer.connection_id)
            held = away.frames()
        elif moved is not None:
            assert cluster is not None
            connection_id, sessions, held = moved
            self.peer = Peer(self.hub.registry, connection_id, user_id, self.deliver)
            self.peer.sessions = set(sessions)
            for session_id in sessions:
                self.hub.registry.place(session_id, self.peer)
            self.hub.rename(self, connection_id)
            cluster.installed(connection_id)
            if self.close_code is not None:
                # closed while it was handed over: the seats are this node's now
                self.resume_token = self.hub.new_resume_token(self)
                self._release_seats(leaving=False)
                return None
        self.resume_token = self.hub.new_resume_token(self)
        welcome = Welcome(
            user_id=user_id,
            connection_id=self.connection_id,
            ice_servers=ice_servers,
            resume_token=self.resume_token if self.resume_token is not None else UNSET,
            resume_window_ms=self._window_ms(),
        )
        if frame.resume is not UNSET:
            welcome.resumed = away is not None or moved is not None
        if not welcome.resumed:
            log.info("authenticated", extra=self.log_ids())
            self.deliver(welcome)
            return batch[1:]
        # Resumed (protocol/SPEC.md §10): welcome, then what was held, in order,
        # then live traffic; from here on the peer's frames come to this connection.
        welcome.sessions = sorted(self.peer.sessions)
        log.info(
            "resumed: back in %d session%s, %d held frame%s",
            len(welcome.sessions),
            "" if len(welcome.sessions) == 1 else "s",
            len(held),
            "" if len(held) == 1 else "s",
            extra=self.log_ids(),
        )
        self.deliver(welcome)
        for held_frame in held:
            self.deliver(held_frame)
        self.peer.deliver = self.deliver
        return batch[1:]

    def _window_ms(self) -> int | UnsetType:
        window = self.hub.resume_window
        return round(window * 1000) if window > 0 else UNSET

    async def _reauth(self, frame: Auth) -> None:
        """A fresh token on a live connection (same user only) extends its life."""
        assert self.peer is not None
        assert self.identity is not None
        if not self.hub.authenticator.verifies_tokens:
            self.peer.handle(frame)  # development mode: a second auth is a bad frame
            return
        try:
            identity = await self.hub.authenticator.authenticate(frame)
            if identity.user_id != self.identity.user_id:
                raise Unauthorized("re-auth must be for the same user")
        except SignalingError as exc:
            self._answer(exc, frame.id)
            return
        self.identity = identity
        log.info("re-authenticated", extra=self.log_ids())
        # The new token decides the seats too: one it no longer allows is left
        # (the others hear user-left) and the client is told why.
        for session_id in sorted(self.peer.sessions):
            try:
                await self.hub.authorizer.authorize_join(identity, session_id)
            except SignalingError as exc:
                self._leave(session_id)
                message = (
                    f"the new token does not allow session {session_id!r} ({exc.message}); "
                    "its seat is given up"
                )
                self._answer(Forbidden(message, session_id=session_id), frame.id)
        ice_servers = await self.hub.ice.ice_servers(identity.user_id)
        self.resume_token = self.hub.new_resume_token(self)
        self.deliver(
            Welcome(
                user_id=identity.user_id,
                connection_id=self.connection_id,
                ice_servers=ice_servers,
                resume_token=self.resume_token if self.resume_token is not None else UNSET,
                resume_window_ms=self._window_ms(),
            )
        )

    def _leave(self, session_id: str, frame: LeaveSession | None = None) -> None:
        """Give up the seat in ``session_id`` (its others hear user-left), on every node."""
        assert self.peer is not None
        self.peer.handle(frame or LeaveSession(session_id=session_id))
        if self.hub.cluster is not None:
            self.hub.cluster.leaving(self.peer, [session_id])

    def expire(self, now: float) -> None:
        """Close with 4401 if the token has expired (checked by the hub's heartbeat)."""
        if self.identity is None or not token_expired(self.identity.expires_at, now):
            return
        log.info("token expired; closing", extra=self.log_ids())
        self._answer(
            Unauthorized("token expired: send a fresh auth frame before exp"),
            close=CloseCode.UNAUTHORIZED,
            reason="token expired",
        )

    async def _join(self, frame: JoinSession) -> None:
        assert self.peer is not None
        assert self.identity is not None
        try:
            await self.hub.authorizer.authorize_join(self.identity, frame.session_id)
        except SignalingError as exc:
            self._answer(exc, frame.id)
            return
        if self.hub.cluster is not None:
            await self.hub.cluster.join(self, frame)
        else:
            self.peer.handle(frame)

    def _refuse(self, reply_to: str | UnsetType, wait: float, now: float) -> None:
        """Over the rate limit: answer ``rate-limited``; close a sender that keeps flooding.

        Every refused frame is answered (nothing is dropped silently), the
        one that ends a flooding connection included.
        """
        settings = self.hub.settings
        self.hub.stats.rate_limited += 1
        flooding = self.flood.refused(now)
        self._answer(
            RateLimited(
                f"over {settings.rate_limit:g} frames/s (burst {settings.rate_burst})",
                retry_after_ms=math.ceil(wait * 1000),
            ),
            reply_to,
        )
        if flooding:
            log.warning(
                "flooding: %d frames refused in a row over %.1f s; closing",
                self.flood.strikes,
                now - self.flood.since,
                extra=self.log_ids(),
            )
            self.close(CloseCode.FLOODING, "flooding after rate-limited warnings")

    def _answer(
        self,
        error: SignalingError,
        reply_to: str | UnsetType = UNSET,
        *,
        close: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Answer a frame with ``error``: the one way the shell turns a refusal into
        an ``error`` frame (the core's `Peer.handle` does the same for its rules).
        Queued even while closing, bounded like any frame; with ``close``, the
        connection then closes with that code (``reason``: the error's message)."""
        self._deliver_now(error.to_frame(reply_to))
        if close is not None:
            self.close(close, error.message if reason is None else reason)

    def _deliver_now(self, frame: ServerFrame) -> None:
        """Queue ``frame`` even while closing (an error before the close frame), bounded
        like every other frame: a client that reads none of its errors is closed 1013."""
        self._count(frame)
        if not self.outbox.put(self.codec.encode(frame)) and not self.outbox.closed:
            self._overflow()

    def _count(self, frame: ServerFrame) -> None:
        stats = self.hub.stats
        stats.frames_out[frame.__struct_config__.tag] += 1  # type: ignore[index]
        if type(frame) is Error:
            stats.errors[frame.code] += 1

    def _decode(
        self, is_text: bool, payload: bytes | str
    ) -> tuple[ClientFrame, None] | tuple[None, Error | None]:
        """The frame, or the ``bad-frame`` error that answers it (None: closing 1007)."""
        codec = self.codec
        if is_text is not codec.text:
            kind = "text" if codec.text else "binary"
            message = f"{codec.subprotocol} carries frames in {kind} WebSocket messages"
            return None, BadFrame(message).to_frame()
        try:
            return codec.decode(payload), None
        except BadFrame as exc:
            if is_text and isinstance(payload, bytes) and not _is_utf8(payload):
                self.close(CloseCode.INVALID_DATA, "text message is not valid UTF-8")
                return None, None
            return None, exc.to_frame(probe_id(payload, text=is_text))
        except UnicodeDecodeError:
            self.close(CloseCode.INVALID_DATA, "text message is not valid UTF-8")
            return None, None


def _leaves(code: int, by: ClosedBy) -> bool:
    """Whether a connection that ended so leaves its sessions at once rather than
    going away (protocol/SPEC.md §10): its client closed with 1000, or with a
    close frame without a code (1005: what a browser's ``close()`` sends)."""
    return by == "client" and code in (CloseCode.NORMAL, 1005)


_HELD = frozenset({RelayedOffer, RelayedAnswer, RelayedIceCandidate, UserJoined, UserLeft})
"""What a connection's unsent frames keep for its resume (with ``replaced`` errors)."""


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
