"""The core's membership rules as a state machine, driven by hypothesis.

Connections of a few users join, leave, replace each other's seats and
disconnect in any order; after every step the registry matches a model, no
session holds more seats than its cap, and every connection has heard of
every other seat exactly what it should: ``user-joined`` once when a seat it
can see is taken, ``user-left`` exactly once when that seat goes (never for a
replaced seat: its replacement is announced with a fresh ``user-joined``).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from signaling.core import Peer, Registry
from signaling.frames import (
    Error,
    JoinSession,
    LeaveSession,
    ServerFrame,
    SessionJoined,
    SessionLeft,
    UserJoined,
    UserLeft,
)

USERS = ["alice", "bob", "carol", "dave"]
SESSIONS = ["s1", "s2"]
CAP = 3


class Membership(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.registry = Registry(max_participants=CAP)
        self.peers: dict[str, Peer] = {}
        self.inbox: dict[str, list[ServerFrame]] = {}
        self.serial = 0
        # the model: session -> user -> connection id holding the seat
        self.seats: dict[str, dict[str, str]] = {session: {} for session in SESSIONS}
        # what each connection should have heard: (session, user) -> +1 joined / -1 left
        self.expected: dict[str, list[tuple[str, str, str]]] = {}

    def _connect(self, user: str) -> str:
        self.serial += 1
        connection = f"c{self.serial}_{user}"
        self.inbox[connection] = []
        self.expected[connection] = []
        self.peers[connection] = Peer(
            self.registry, connection, user, self.inbox[connection].append
        )
        return connection

    def _others(self, session: str, but: str) -> list[str]:
        return [c for u, c in self.seats[session].items() if c != but]

    @rule(user=st.sampled_from(USERS))
    def connect(self, user: str) -> None:
        self._connect(user)

    @precondition(lambda self: self.peers)
    @rule(data=st.data(), session=st.sampled_from(SESSIONS))
    def join(self, data: st.DataObject, session: str) -> None:
        connection = data.draw(st.sampled_from(sorted(self.peers)))
        peer = self.peers[connection]
        user = peer.user_id
        seats = self.seats[session]
        held = seats.get(user)
        replaced = held is not None and held != connection
        full = held is None and len(seats) >= CAP
        peer.handle(JoinSession(session_id=session))
        reply = self.inbox[connection][-1]
        if full:
            assert isinstance(reply, Error)
            assert reply.code == "session-full"
            return
        assert isinstance(reply, SessionJoined)
        if held == connection:
            return  # a re-join changes nothing and tells nobody
        assert sorted(reply.participants) == sorted(u for u in seats if u != user)
        if replaced:
            assert held is not None
            self.expected[held].append(("replaced", session, user))
        for other in self._others(session, held or ""):
            if other != connection:
                self.expected[other].append(("joined", session, user))
        seats[user] = connection

    @precondition(lambda self: self.peers)
    @rule(data=st.data(), session=st.sampled_from(SESSIONS))
    def leave(self, data: st.DataObject, session: str) -> None:
        connection = data.draw(st.sampled_from(sorted(self.peers)))
        peer = self.peers[connection]
        seats = self.seats[session]
        peer.handle(LeaveSession(session_id=session))
        reply = self.inbox[connection][-1]
        if seats.get(peer.user_id) != connection:
            assert isinstance(reply, Error)
            assert reply.code == "not-in-session"
            return
        assert isinstance(reply, SessionLeft)
        del seats[peer.user_id]
        for other in self._others(session, connection):
            self.expected[other].append(("left", session, peer.user_id))

    @precondition(lambda self: self.peers)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        connection = data.draw(st.sampled_from(sorted(self.peers)))
        peer = self.peers.pop(connection)
        peer.close()
        for session, seats in self.seats.items():
            if seats.get(peer.user_id) == connection:
                del seats[peer.user_id]
                for other in self._others(session, connection):
                    self.expected[other].append(("left", session, peer.user_id))

    @invariant()
    def registry_matches_the_model_within_the_cap(self) -> None:
        for session, seats in self.seats.items():
            assert len(seats) <= CAP
            assert sorted(self.registry.participants(session)) == sorted(seats)

    @invariant()
    def everyone_heard_each_seat_change_exactly_once(self) -> None:
        for connection, frames in self.inbox.items():
            heard = []
            for frame in frames:
                if isinstance(frame, UserJoined):
                    heard.append(("joined", frame.session_id, frame.user_id))
                elif isinstance(frame, UserLeft):
                    heard.append(("left", frame.session_id, frame.user_id))
                elif isinstance(frame, Error) and frame.code == "replaced":
                    assert isinstance(frame.session_id, str)
                    heard.append(("replaced", frame.session_id, self._user(connection)))
            # in order within a session; a disconnect's user-left frames for
            # several sessions may come in any order among themselves
            for session in SESSIONS:
                assert [h for h in heard if h[1] == session] == [
                    e for e in self.expected[connection] if e[1] == session
                ], (connection, session)

    def _user(self, connection: str) -> str:
        return connection.split("_", 1)[1]


Membership.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestMembership = Membership.TestCase
