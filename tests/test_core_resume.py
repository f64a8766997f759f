"""Resume in the core (`signaling.core.resume`), sans I/O: the table's rules,
and hypothesis over interleavings of drop, resume, leave, close, expiry and
signals, checking that every participant hears ``user-left`` exactly once per
departure (never for a drop it came back from) and gets every signal sent to
it, in order, none duplicated."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from signaling.core import Peer, Registry
from signaling.core.resume import Resumes
from signaling.frames import (
    Error,
    IceCandidate,
    JoinSession,
    LeaveSession,
    RelayedIceCandidate,
    ServerFrame,
    UserJoined,
    UserLeft,
)

WINDOW = 15.0


def make(window: float = WINDOW, frames: int = 100, capacity: int = 100) -> Resumes:
    return Resumes(window, max_frames=frames, max_bytes=1 << 20, capacity=capacity)


def peer(registry: Registry, user: str, inbox: list[ServerFrame]) -> Peer:
    p = Peer(registry, f"c_{user}", user, inbox.append)
    p.handle(JoinSession(session_id="s"))
    return p


def signal(to: str, n: int) -> IceCandidate:
    return IceCandidate(to=to, session_id="s", data={"candidate": None, "n": n})


def test_an_away_peer_keeps_its_seat_and_its_frames_are_held_in_order() -> None:
    registry = Registry(max_participants=4)
    alice_inbox: list[ServerFrame] = []
    bob_inbox: list[ServerFrame] = []
    alice = peer(registry, "alice", alice_inbox)
    bob = peer(registry, "bob", bob_inbox)
    resumes = make()
    away = resumes.go_away("t", bob, now=0.0)
    for n in range(3):
        alice.handle(signal("bob", n))
    assert registry.participants("s") == ["alice", "bob"]
    assert (len(resumes), resumes.held, resumes.seats) == (1, 3, 1)
    assert resumes.get("c_bob") is away
    claimed = resumes.claim("t", "bob", now=WINDOW - 0.1)
    assert claimed is away
    assert [f.data["n"] for f in claimed.frames()] == [0, 1, 2]  # type: ignore[union-attr]
    assert resumes.claim("t", "bob", now=1.0) is None  # once
    assert resumes.get("c_bob") is None
    assert not any(isinstance(f, UserLeft) for f in alice_inbox)


def test_a_foreign_or_late_claim_is_refused() -> None:
    registry = Registry(max_participants=4)
    resumes = make()
    resumes.go_away("t", peer(registry, "bob", []), now=0.0)
    assert resumes.claim("t", "mallory", now=1.0) is None
    assert resumes.claim("nope", "bob", now=1.0) is None
    assert resumes.claim("t", "bob", now=WINDOW) is None  # the window is over
    assert [a.user_id for a in resumes.due(WINDOW)] == ["bob"]


def test_due_returns_them_in_deadline_order_and_next_deadline_says_when() -> None:
    registry = Registry(max_participants=4)
    resumes = make()
    assert resumes.next_deadline() == float("inf")
    resumes.go_away("a", peer(registry, "a", []), now=0.0)
    resumes.go_away("b", peer(registry, "b", []), now=5.0)
    assert resumes.next_deadline() == WINDOW
    assert resumes.due(WINDOW - 0.1) == []
    assert [a.user_id for a in resumes.due(WINDOW)] == ["a"]
    assert resumes.next_deadline() == 5.0 + WINDOW


def test_an_overflowing_hold_is_due_at_once_and_says_so() -> None:
    registry = Registry(max_participants=4)
    alice = peer(registry, "alice", [])
    resumes = make(frames=2)
    woken: list[bool] = []
    resumes.on_due = lambda: woken.append(True)
    away = resumes.go_away("t", peer(registry, "bob", []), now=0.0)
    for n in range(3):
        alice.handle(signal("bob", n))
    assert away.overflowed
    assert woken == [True]
    assert not away.held
    assert resumes.next_deadline() == float("-inf")
    assert resumes.claim("t", "bob", now=1.0) is None
    assert resumes.due(1.0) == [away]


def test_a_full_table_pushes_out_the_oldest() -> None:
    registry = Registry(max_participants=4)
    resumes = make(capacity=2)
    first = resumes.go_away("a", peer(registry, "a", []), now=0.0)
    resumes.go_away("b", peer(registry, "b", []), now=1.0)
    resumes.go_away("c", peer(registry, "c", []), now=2.0)
    assert len(resumes) == 2
    assert resumes.due(3.0) == [first]


USERS = ["alice", "bob", "carol"]


class Interleavings(RuleBasedStateMachine):
    """Three users in one session drop, resume, leave, close and rejoin while
    the clock runs and signals fly."""

    def __init__(self) -> None:
        super().__init__()
        self.registry = Registry(max_participants=8)
        self.resumes = make()
        self.now = 0.0
        self.serial = 0
        self.state: dict[str, str] = dict.fromkeys(USERS, "gone")
        self.peers: dict[str, Peer] = {}
        self.tokens: dict[str, str] = {}
        self.streams: dict[str, list[ServerFrame]] = {}
        """Each present user's stream: what its client got, over resumes."""
        self.expected_members: dict[str, list[tuple[str, str]]] = {}
        self.expected_signals: dict[str, list[tuple[str, int]]] = {}
        self.seq = 0

    def _present(self, but: str) -> list[str]:
        return [u for u, s in self.state.items() if s != "gone" and u != but]

    @precondition(lambda self: "gone" in self.state.values())
    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from([u for u, s in self.state.items() if s == "gone"]))
        self.serial += 1
        stream: list[ServerFrame] = []
        self.streams[user] = stream
        self.expected_members[user] = []
        self.expected_signals[user] = []
        self.peers[user] = Peer(self.registry, f"c{self.serial}", user, stream.append)
        self.peers[user].handle(JoinSession(session_id="s"))
        for other in self._present(user):
            self.expected_members[other].append(("joined", user))
        self.state[user] = "live"

    def _live(self) -> list[str]:
        return [u for u, s in self.state.items() if s == "live"]

    def _away(self) -> list[str]:
        return [u for u, s in self.state.items() if s == "away"]

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(self._live()))
        self.serial += 1
        self.tokens[user] = f"t{self.serial}"
        self.resumes.go_away(self.tokens[user], self.peers[user], self.now)
        self.state[user] = "away"

    @precondition(lambda self: self._away())
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(self._away()))
        away = self.resumes.claim(self.tokens[user], user, self.now)
        assert away is not None  # expiries run before any claim (see tick)
        stream = self.streams[user]
        stream.extend(away.frames())
        away.peer.deliver = stream.append
        self.state[user] = "live"

    def _depart(self, user: str) -> None:
        self.state[user] = "gone"
        for other in self._present(user):
            self.expected_members[other].append(("left", user))

    @precondition(lambda self: self._live())
    @rule(data=st.data(), how=st.sampled_from(["leave", "close"]))
    def leave_or_close(self, data: st.DataObject, how: str) -> None:
        user = data.draw(st.sampled_from(self._live()))
        if how == "leave":
            self.peers[user].handle(LeaveSession(session_id="s"))
        else:
            self.peers[user].close()
        self._depart(user)

    @rule(seconds=st.sampled_from([0.5, 5.0, 14.9, 15.0, 30.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        for away in self.resumes.due(self.now):
            away.peer.close()
            self._depart(away.user_id)

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        sender = data.draw(st.sampled_from(self._live()))
        to = data.draw(st.sampled_from([u for u in USERS if u != sender]))
        self.seq += 1
        before = len(self.streams[sender])
        self.peers[sender].handle(signal(to, self.seq))
        refused = [f for f in self.streams[sender][before:] if isinstance(f, Error)]
        if self.state[to] == "gone":
            assert [f.code for f in refused] == ["peer-not-found"]
            return
        assert refused == []
        self.expected_signals[to].append((sender, self.seq))

    @invariant()
    def everyone_heard_exactly_what_they_should(self) -> None:
        for user, stream in self.streams.items():
            if self.state[user] != "live":
                continue  # an away client's frames are in its hold until it resumes
            members = [
                ("joined" if isinstance(f, UserJoined) else "left", f.user_id)
                for f in stream
                if isinstance(f, UserJoined | UserLeft)
            ]
            assert members == self.expected_members[user]
            signals = [(f.from_, f.data["n"]) for f in stream if isinstance(f, RelayedIceCandidate)]
            assert signals == self.expected_signals[user]  # in order, none lost or doubled

    @invariant()
    def seats_match_presence(self) -> None:
        present = sorted(u for u, s in self.state.items() if s != "gone")
        assert sorted(self.registry.participants("s")) == present


Interleavings.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestInterleavings = Interleavings.TestCase
