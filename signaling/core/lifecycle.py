"""A connection's lifecycle (protocol/SPEC.md §2 and §7) as one state machine.

::

    AUTHENTICATING ──authenticated──▶ OPEN
          │                            │
          └───────────close────────────┴──▶ CLOSING ──ended──▶ CLOSED
          (ended before any close: the network dropped it)

- **AUTHENTICATING**: open, and the first frame must be ``auth`` within the
  auth timeout.
- **OPEN**: authenticated; frames are applied, seats taken, the heartbeat and
  the token's expiry watch it.
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

__all__ = ["Lifecycle", "LifecycleError", "Phase"]


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
