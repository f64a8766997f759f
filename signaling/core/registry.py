"""Sessions and their seats: who is in which session, one seat per user."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Protocol

from ..errors import SessionFull

if TYPE_CHECKING:
    from ..frames import ServerFrame

__all__ = ["Member", "Registry"]


class Member(Protocol):
    """A participant as the registry sees it: one connection of one user."""

    @property
    def user_id(self) -> str:
        """The authenticated user."""
        ...

    def deliver(self, frame: ServerFrame) -> None:
        """Queue ``frame`` for this participant; never blocks."""
        ...

    def evict(self, session_id: str) -> None:
        """A newer connection of the same user took this seat."""
        ...


class Registry:
    """Maps ``sessionId`` to its seats (``userId`` to `Member`).

    A session exists while it has a seat: the last leave removes it, so
    abandoned sessions cost nothing.
    """

    __slots__ = (
        "_sessions",
        "connection_states",
        "max_participants",
        "max_sessions_per_connection",
    )

    def __init__(self, *, max_participants: int, max_sessions_per_connection: int = 0) -> None:
        self.max_participants = max_participants
        self.max_sessions_per_connection = max_sessions_per_connection
        """0: no cap on the sessions one connection may sit in."""
        self._sessions: dict[str, dict[str, Member]] = {}
        self.connection_states: Counter[str] = Counter()
        """How many ``connection-state`` reports of each state arrived."""

    @property
    def session_count(self) -> int:
        """How many sessions have at least one participant."""
        return len(self._sessions)

    @property
    def participant_count(self) -> int:
        """How many seats are taken, over all sessions."""
        return sum(len(seats) for seats in self._sessions.values())

    def participants(self, session_id: str) -> list[str]:
        """The userIds seated in ``session_id``."""
        return list(self._sessions.get(session_id, ()))

    def members(self, session_id: str) -> list[Member]:
        """Who holds the seats of ``session_id``."""
        return list(self._sessions.get(session_id, {}).values())

    def sessions_of(self, user_id: str) -> list[str]:
        """The sessions where ``user_id`` has a seat (a scan: for rare events)."""
        return [session for session, seats in self._sessions.items() if user_id in seats]

    def seat(self, session_id: str, user_id: str) -> Member | None:
        """The member holding ``user_id``'s seat in ``session_id``, if any."""
        seats = self._sessions.get(session_id)
        return None if seats is None else seats.get(user_id)

    def join(self, member: Member, session_id: str) -> tuple[list[Member], Member | None]:
        """Seat ``member``; returns (the others seated before, the member it replaced).

        Joining a session one already sits in changes nothing and returns the
        member itself as "replaced", so callers can tell a re-join apart.
        Raises `SessionFull` when the cap is reached and the user has no seat.
        """
        seats = self._sessions.get(session_id)
        if seats is None:
            seats = self._sessions[session_id] = {}
        user_id = member.user_id
        previous = seats.get(user_id)
        if previous is None and len(seats) >= self.max_participants:
            raise SessionFull(
                f"session {session_id!r} has its maximum of {self.max_participants} participants"
            )
        others = [seated for uid, seated in seats.items() if uid != user_id]
        seats[user_id] = member
        return others, previous

    def place(self, session_id: str, member: Member) -> Member | None:
        """Seat ``member`` as another node decided (no cap check); returns who it replaced."""
        seats = self._sessions.setdefault(session_id, {})
        previous = seats.get(member.user_id)
        seats[member.user_id] = member
        return previous

    def unseat(self, session_id: str, user_id: str) -> list[Member] | None:
        """Remove ``user_id``'s seat whoever holds it; the others, or None if there was none."""
        seats = self._sessions.get(session_id)
        if seats is None or seats.pop(user_id, None) is None:
            return None
        others = list(seats.values())
        if not seats:
            del self._sessions[session_id]
        return others

    def forget_if_remote_only(self, session_id: str) -> None:
        """Drop a session whose seats left here are all held on other nodes."""
        seats = self._sessions.get(session_id)
        if seats is not None and all(getattr(m, "is_remote", False) for m in seats.values()):
            del self._sessions[session_id]

    def leave(self, member: Member, session_id: str) -> list[Member] | None:
        """Unseat ``member``; returns the others still seated, or None if it had no seat."""
        seats = self._sessions.get(session_id)
        if seats is None or seats.get(member.user_id) is not member:
            return None
        del seats[member.user_id]
        if not seats:
            del self._sessions[session_id]
            return []
        return list(seats.values())
