"""Resume (protocol/SPEC.md §10): a dropped connection's seats wait for it.

When a connection ends in any way other than its client's own close with
1000, its `Peer` does not leave its sessions: it goes *away*. The registry
keeps its seats, so the others hear nothing, and every frame addressed to it
is held, in order, in an `Away`. Within the window a new connection that
sends the old one's resume token takes the `Peer` back (`Resumes.claim`),
gets the held frames and carries on; nobody hears ``user-left`` or
``user-joined``. When the window ends, or the hold overflows, the shell makes
the `Peer` leave for good (``user-left``, once).

Sans I/O: the trio shell (`signaling.server.hub`) owns the clock, asks
`Resumes.due` what has expired and makes the expired peers leave.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import msgspec

from ..frames import ServerFrame

if TYPE_CHECKING:
    from collections.abc import Callable

    from .peer import Peer

__all__ = ["Away", "Resumes"]

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(ServerFrame).decode


class Away:
    """One away connection: its `Peer`, its deadline and the frames held for it.

    Frames are held as MessagePack (whatever the client's encoding), which
    sizes them exactly and lets them travel to another node unchanged.
    """

    __slots__ = (
        "_on_overflow",
        "deadline",
        "held",
        "held_bytes",
        "max_bytes",
        "max_frames",
        "overflowed",
        "peer",
        "token",
    )

    def __init__(
        self,
        token: str,
        peer: Peer,
        deadline: float,
        *,
        max_frames: int,
        max_bytes: int,
        on_overflow: Callable[[Away], None],
    ) -> None:
        self.token = token
        self.peer = peer
        self.deadline = deadline
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.held: deque[bytes] = deque()
        self.held_bytes = 0
        self.overflowed = False
        """The hold passed its bound: the window ends early, nothing more is held."""
        self._on_overflow = on_overflow

    @property
    def user_id(self) -> str:
        """The away connection's user."""
        return self.peer.user_id

    def hold(self, frame: ServerFrame) -> None:
        """Keep ``frame`` for the client's return (the away `Peer`'s ``deliver``)."""
        if self.overflowed:
            return
        message = _encode(frame)
        if len(self.held) >= self.max_frames or self.held_bytes + len(message) > self.max_bytes:
            self._overflow()
            return
        self.held.append(message)
        self.held_bytes += len(message)

    def hold_first(self, frames: list[ServerFrame]) -> None:
        """Put ``frames`` ahead of what is held: what the old connection had queued
        but never wrote comes before what arrived after it went away."""
        for frame in reversed(frames):
            message = _encode(frame)
            self.held.appendleft(message)
            self.held_bytes += len(message)
        if len(self.held) > self.max_frames or self.held_bytes > self.max_bytes:
            self._overflow()

    def _overflow(self) -> None:
        """Past the bound: nothing more is held, and the table ends the window."""
        self.overflowed = True
        self.held.clear()
        self.held_bytes = 0
        self._on_overflow(self)

    def frames(self) -> list[ServerFrame]:
        """The held frames, in the order they were held."""
        return [_decode(message) for message in self.held]


class Resumes:
    """Every away connection of this node, by resume token.

    ``capacity`` bounds the table: when it is full, the connection away the
    longest is expired early to make room (the shell's `due` returns it).
    """

    __slots__ = (
        "_away",
        "_by_connection",
        "_expired",
        "capacity",
        "max_bytes",
        "max_frames",
        "on_due",
        "window",
    )

    def __init__(self, window: float, *, max_frames: int, max_bytes: int, capacity: int) -> None:
        self.window = window
        """Seconds a seat waits; 0: resume is off."""
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.capacity = capacity
        self._away: dict[str, Away] = {}  # insertion order is deadline order
        self._by_connection: dict[str, Away] = {}
        self._expired: list[Away] = []
        """Overflowed or pushed out: due at once."""
        self.on_due: Callable[[], None] = lambda: None
        """Called when one is due before `next_deadline` said (the shell wakes up)."""

    def __len__(self) -> int:
        return len(self._away)

    @property
    def enabled(self) -> bool:
        """Whether connections go away at all."""
        return self.window > 0

    @property
    def held(self) -> int:
        """How many frames are held, over all away connections."""
        return sum(len(away.held) for away in self._away.values())

    @property
    def seats(self) -> int:
        """How many seats are kept for away connections."""
        return sum(len(away.peer.sessions) for away in self._away.values())

    def go_away(self, token: str, peer: Peer, now: float) -> Away:
        """``peer``'s connection ended: hold its seats until ``now + window``.

        Its ``deliver`` now holds frames; a table at capacity pushes out the
        connection away the longest.
        """
        if len(self._away) >= self.capacity:
            oldest = next(iter(self._away))
            self._expired.append(self._away.pop(oldest))
            self.on_due()
        away = Away(
            token,
            peer,
            now + self.window,
            max_frames=self.max_frames,
            max_bytes=self.max_bytes,
            on_overflow=self._overflowed,
        )
        self._away[token] = away
        self._by_connection[peer.connection_id] = away
        peer.deliver = away.hold
        return away

    def get(self, connection_id: str) -> Away | None:
        """The away connection of that id (for frames routed to it by id)."""
        return self._by_connection.get(connection_id)

    def claim(self, token: str, user_id: str, now: float) -> Away | None:
        """The away connection ``token`` names, taken out of the table, if it is
        ``user_id``'s and its window is still open; each token works once."""
        away = self._away.get(token)
        if away is None or away.overflowed or now >= away.deadline:
            return None
        if away.user_id != user_id:
            return None  # a foreign token: it stays for its owner
        del self._away[token]
        self._forget(away)
        return away

    def due(self, now: float) -> list[Away]:
        """Take out every away connection whose window is over (or overflowed)."""
        due, self._expired = self._expired, []
        for away in due:
            self._forget(away)
        # every away gets the same window, so insertion order is deadline order:
        # the due ones are at the front
        while self._away:
            token, away = next(iter(self._away.items()))
            if now < away.deadline:
                break
            due.append(self._away.pop(token))
            self._forget(away)
        return due

    def next_deadline(self) -> float:
        """When `due` next has something (-inf: now; inf: not until one goes away)."""
        if self._expired:
            return -float("inf")
        for away in self._away.values():
            return away.deadline
        return float("inf")

    def take_all(self) -> list[Away]:
        """Empty the table (a node that stops: the shell makes them all leave)."""
        away = list(self._away.values()) + self._expired
        self._away.clear()
        self._by_connection.clear()
        self._expired = []
        return away

    def _forget(self, away: Away) -> None:
        if self._by_connection.get(away.peer.connection_id) is away:
            del self._by_connection[away.peer.connection_id]

    def _overflowed(self, away: Away) -> None:
        if self._away.get(away.token) is away:
            del self._away[away.token]
            self._expired.append(away)
            self.on_due()
