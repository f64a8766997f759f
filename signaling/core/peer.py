"""The rules of protocol/SPEC.md §5 for one authenticated connection."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, assert_never

from ..errors import BadFrame, Forbidden, NotInSession, PeerNotFound, SignalingError
from ..frames import (
    Answer,
    Auth,
    ConnectionState,
    Error,
    IceCandidate,
    JoinSession,
    LeaveSession,
    Offer,
    RelayedAnswer,
    RelayedIceCandidate,
    RelayedOffer,
    SessionJoined,
    SessionLeft,
    UserJoined,
    UserLeft,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..frames import ClientFrame, ServerFrame
    from .registry import Registry

__all__ = ["Peer", "describe_candidate"]

log = logging.getLogger("signaling.peer")

CONNECTION_STATES = frozenset(
    ("new", "checking", "connecting", "connected", "completed", "disconnected", "failed", "closed")
)
"""The RTCPeerConnectionState and RTCIceConnectionState values, counted by name;
any other ``state`` is counted as ``other``."""


def describe_candidate(candidate: Mapping[str, Any] | None) -> str:
    """``"host udp"``: the type and protocol of ``data.candidate``, for logs (no addresses)."""
    if candidate is None:
        return "end of candidates"
    line = candidate.get("candidate")
    if not isinstance(line, str) or not line:
        return "end of candidates (empty)"
    parts = line.split()
    protocol = parts[2].lower() if len(parts) > 2 else "?"
    try:
        kind = parts[parts.index("typ") + 1]
    except (ValueError, IndexError):
        kind = "?"
    return f"{kind} {protocol}"


class Peer:
    """One connection of one user: its seats, and what its frames do.

    ``deliver`` queues a frame for this connection's client; it must not
    block. Every rule violation becomes an ``error`` frame to the sender and
    leaves the connection open.
    """

    __slots__ = ("_registry", "closed", "connection_id", "deliver", "sessions", "user_id")

    is_remote = False
    """A connection of this node (see `signaling.server.cluster.RemotePeer`)."""

    def __init__(
        self,
        registry: Registry,
        connection_id: str,
        user_id: str,
        deliver: Callable[[ServerFrame], None],
    ) -> None:
        self._registry = registry
        self.connection_id = connection_id
        self.user_id = user_id
        self.deliver = deliver
        self.sessions: set[str] = set()
        self.closed = False

    def handle(self, frame: ClientFrame) -> None:
        """Apply one client frame; errors go back to this client as ``error`` frames."""
        try:
            match frame:
                case IceCandidate():  # first: most frames of a call are candidates
                    self._relay(frame, RelayedIceCandidate)
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug(
                            "ice-candidate to %s in session %s: %s",
                            frame.to,
                            frame.session_id,
                            describe_candidate(frame.data["candidate"]),
                            extra=self.log_ids(),
                        )
                case Offer():
                    self._relay(frame, RelayedOffer)
                    self._log_signal(frame)
                case Answer():
                    self._relay(frame, RelayedAnswer)
                    self._log_signal(frame)
                case JoinSession():
                    self.join(frame)
                case LeaveSession():
                    self.leave(frame)
                case ConnectionState():
                    self._connection_state(frame)
                case Auth():
                    raise BadFrame("already authenticated: auth is only valid as the first frame")
                case _:
                    assert_never(frame)
        except SignalingError as exc:
            self.deliver(exc.to_frame(frame.id))

    def log_ids(self) -> dict[str, str]:
        """``extra`` for log calls: this connection's id and user."""
        return {"connection_id": self.connection_id, "user_id": self.user_id}

    def _log_signal(self, frame: Offer | Answer) -> None:
        log.info(
            "%s to %s in session %s",
            frame.__struct_config__.tag,
            frame.to,
            frame.session_id,
            extra=self.log_ids(),
        )

    def join(self, frame: JoinSession) -> None:
        """Take a seat; raises `SessionFull`."""
        session_id = frame.session_id
        cap = self._registry.max_sessions_per_connection
        if cap and len(self.sessions) >= cap and session_id not in self.sessions:
            raise Forbidden(f"this connection is in {cap} sessions already; leave one first")
        others, previous = self._registry.join(self, session_id)
        if previous is not None and previous is not self:
            previous.evict(session_id)
        self.sessions.add(session_id)
        self.deliver(
            SessionJoined(
                session_id=session_id,
                participants=[other.user_id for other in others],
                reply_to=frame.id,
            )
        )
        if previous is self:
            return
        log.info("joined session %s", session_id, extra=self.log_ids())
        joined = UserJoined(session_id=session_id, user_id=self.user_id)
        for other in others:
            other.deliver(joined)

    def leave(self, frame: LeaveSession) -> None:
        """Give up a seat; raises `NotInSession`."""
        session_id = frame.session_id
        if session_id not in self.sessions:
            raise NotInSession(f"not in session {session_id!r}")
        self.sessions.discard(session_id)
        self._unseat(session_id)
        self.deliver(SessionLeft(session_id=session_id, reply_to=frame.id))

    def evict(self, session_id: str) -> None:
        """A newer connection of this user took the seat in ``session_id``."""
        self.sessions.discard(session_id)
        log.info("replaced in session %s", session_id, extra=self.log_ids())
        self.deliver(
            Error(
                code="replaced",
                message=f"another connection of {self.user_id!r} joined session {session_id!r}",
                session_id=session_id,
            )
        )

    def close(self) -> None:
        """The connection is gone: leave every session, telling the others once."""
        if self.closed:
            return
        self.closed = True
        for session_id in self.sessions:
            self._unseat(session_id)
        self.sessions.clear()

    def _unseat(self, session_id: str) -> None:
        others = self._registry.leave(self, session_id)
        if others is None:
            return
        log.info("left session %s", session_id, extra=self.log_ids())
        left = UserLeft(session_id=session_id, user_id=self.user_id)
        for other in others:
            other.deliver(left)

    def _relay(
        self,
        frame: Offer | Answer | IceCandidate,
        relayed: type[RelayedOffer] | type[RelayedAnswer] | type[RelayedIceCandidate],
    ) -> None:
        session_id = frame.session_id
        if session_id not in self.sessions:
            raise NotInSession(f"not in session {session_id!r}")
        target = self._registry.seat(session_id, frame.to)
        if target is None:
            raise PeerNotFound(f"{frame.to!r} is not in session {session_id!r}")
        target.deliver(
            relayed(
                from_=self.user_id,
                to=frame.to,
                session_id=session_id,
                data=frame.data,
                id=frame.id,
            )
        )

    def _connection_state(self, frame: ConnectionState) -> None:
        # a client may send any string: the metric's labels stay a fixed set
        state = frame.state if frame.state in CONNECTION_STATES else "other"
        self._registry.connection_states[state] += 1
        log.info(
            "connection state in session %s: %s",
            frame.session_id,
            frame.state,
            extra=self.log_ids(),
        )
