"""A connection's lifecycle (protocol/SPEC.md §2 and §7) as one state machine.

::

    AUTHENTICATING ──authenticated──▶ OPEN
          │                            │
          └───────────close────────────┴──▶ CLOSING ──ended──▶ CLOSED
          (ended before any close: the network dropped it)

- **AUTHENTICATING**: open, and the first frame must be ``auth`` within the
  auth timeout.
- **OPEN**: authenticated; frames are applied, seats taken, the heartbeat
  (`Heartbeat`: when to ping, when silence ends it with 4408) and the
  token's expiry (`token_expired`: 4401 unless a fresh ``auth`` came) watch it.
- **CLOSING**: a close code is chosen (the first one wins: the server's, or
  the client's echoed); what is queued is flushed, the close frame sent, the
  client's awaited within the close timeout. Seats are freed on entry.
- **CLOSED**: the connection's tasks have ended.

Sans I/O, like the rest of the core: the trio shell
(`signaling.server.connection`) feeds it events and acts on what it says.
A transition the table does not allow is a bug and raises `LifecycleError`.
"""

from __future__ import annotations

import enum
from typing import Literal

__all__ = ["Beat", "Heartbeat", "Lifecycle", "LifecycleError", "Phase", "token_expired"]


class Phase(enum.Enum):
    """Where a connection is in its life."""

    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.AUTHENTICATING: frozenset({Phase.OPEN, Phase.CLOSING, Phase.CLOSED}),
    Phase.OPEN: frozenset({Phase.CLOSING, Phase.CLOSED}),
    Phase.CLOSING: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}


class LifecycleError(RuntimeError):
    """A transition the lifecycle does not allow (a bug, not a client's doing)."""


ClosedBy = Literal["server", "client", "network"]


class Lifecycle:
    """One connection's phase, and the close it ended with."""

    __slots__ = ("closed_by", "code", "phase", "reason")

    def __init__(self) -> None:
        self.phase = Phase.AUTHENTICATING
        self.code: int | None = None
        """The close code, once one is chosen."""
        self.reason = ""
        self.closed_by: ClosedBy | None = None

    def authenticated(self) -> None:
        """``auth`` was accepted."""
        self._to(Phase.OPEN)

    def close(self, code: int, reason: str = "", *, by: ClosedBy = "server") -> bool:
        """Choose the close code; False (and nothing changes) if one was chosen already."""
        if self.code is not None or self.phase is Phase.CLOSED:
            return False
        self._to(Phase.CLOSING)
        self.code, self.reason, self.closed_by = code, reason, by
        return True

    def ended(self, client_close: int | None = None) -> tuple[int, ClosedBy]:
        """The connection's tasks are done; returns the code it ended with and who
        closed it. ``client_close``: a close code the client sent that no close
        was chosen from (a transport that ended its connection on it)."""
        self._to(Phase.CLOSED)
        if self.code is not None:
            return self.code, self.closed_by or "server"
        if client_close is not None and client_close != 1006:
            return client_close, "client"
        return 1006, "network"  # no close frame either way

    def _to(self, phase: Phase) -> None:
        if phase not in _ALLOWED[self.phase]:
            raise LifecycleError(f"{self.phase.value} cannot become {phase.value}")
        self.phase = phase


class Beat(enum.Enum):
    """What the heartbeat says to do with one connection at one check."""

    QUIET = "quiet"
    """Nothing: it spoke recently, or a ping is already out."""
    PING = "ping"
    TIMEOUT = "timeout"
    """Close it with 4408: silent for longer than a ping and its answer take."""


class Heartbeat:
    """When an open connection is pinged, and when its silence ends it (SPEC §7).

    A connection that received nothing for ``interval`` seconds gets a ping;
    one that received nothing (pong included) for ``interval + timeout`` is
    timed out. The shell checks every `tick` (a quarter of the shorter of the
    two) and a connection is timed out at the last check before its limit
    rather than the first after, so a half-open one never outlives it.
    """

    __slots__ = ("interval", "limit", "tick")

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.tick = min(interval, timeout) / 4
        """How often the shell should call `check` for each connection."""
        self.limit = interval + timeout - self.tick

    def check(
        self, now: float, last_activity: float, pinged_at: float, *, always_ping: bool = False
    ) -> Beat:
        """The verdict for a connection last heard from at ``last_activity`` and
        last pinged at ``pinged_at``. ``always_ping``: the transport's protocol
        pings every interval whatever the traffic (Engine.IO)."""
        if now - last_activity >= self.limit:
            return Beat.TIMEOUT
        if always_ping:
            return Beat.PING if now - pinged_at >= self.interval else Beat.QUIET
        if now - last_activity >= self.interval and pinged_at <= last_activity:
            return Beat.PING  # one ping per silence: the answer refreshes last_activity
        return Beat.QUIET


def token_expired(expires_at: float | None, wall_time: float) -> bool:
    """Whether a token valid until ``expires_at`` (a Unix time; None: no expiry)
    has expired at ``wall_time``."""
    return expires_at is not None and wall_time >= expires_at
