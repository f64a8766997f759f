"""The pure core, driven without sockets or trio."""

from __future__ import annotations

import subprocess
import sys

import pytest

from signaling.core import Peer, Registry
from signaling.frames import (
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
    ServerFrame,
    SessionJoined,
    SessionLeft,
    UserJoined,
    UserLeft,
)

OFFER = {"sdp": {"type": "offer", "sdp": "v=0\r\n"}}


class Box:
    """Collects what the core delivers to one connection."""

    def __init__(self) -> None:
        self.frames: list[ServerFrame] = []

    def __call__(self, frame: ServerFrame) -> None:
        self.frames.append(frame)

    def take(self) -> list[ServerFrame]:
        frames, self.frames = self.frames, []
        return frames


def peer(registry: Registry, user: str, connection: str | None = None) -> tuple[Peer, Box]:
    box = Box()
    return Peer(registry, connection or f"c_{user}", user, box), box


@pytest.fixture
def registry() -> Registry:
    return Registry(max_participants=3)


def test_join_replies_with_participants_already_there_and_tells_the_others(
    registry: Registry,
) -> None:
    alice, alice_box = peer(registry, "alice")
    bob, bob_box = peer(registry, "bob")
    alice.handle(JoinSession(session_id="s", id="j1"))
    assert alice_box.take() == [SessionJoined(session_id="s", participants=[], reply_to="j1")]
    bob.handle(JoinSession(session_id="s"))
    assert bob_box.take() == [SessionJoined(session_id="s", participants=["alice"])]
    assert alice_box.take() == [UserJoined(session_id="s", user_id="bob")]
    assert registry.participants("s") == ["alice", "bob"]


def test_rejoining_the_same_session_announces_nothing(registry: Registry) -> None:
    alice, alice_box = peer(registry, "alice")
    bob, bob_box = peer(registry, "bob")
    alice.handle(JoinSession(session_id="s"))
    bob.handle(JoinSession(session_id="s"))
    alice_box.take()
    bob_box.take()
    bob.handle(JoinSession(session_id="s", id="again"))
    assert bob_box.take() == [
        SessionJoined(session_id="s", participants=["alice"], reply_to="again")
    ]
    assert alice_box.take() == []


def test_leave_replies_and_tells_the_others_once(registry: Registry) -> None:
    alice, alice_box = peer(registry, "alice")
    bob, bob_box = peer(registry, "bob")
    alice.handle(JoinSession(session_id="s"))
    bob.handle(JoinSession(session_id="s"))
    alice_box.take()
    bob.handle(LeaveSession(session_id="s", id="l1"))
    assert bob_box.take() == [
        SessionJoined(session_id="s", participants=["alice"]),
        SessionLeft(session_id="s", reply_to="l1"),
    ]
    assert alice_box.take() == [UserLeft(session_id="s", user_id="bob")]
    bob.handle(LeaveSession(session_id="s", id="l2"))
    [error] = bob_box.take()
    assert isinstance(error, Error)
    assert (error.code, error.reply_to) == ("not-in-session", "l2")
    bob.close()
    assert alice_box.take() == []


def test_leave_of_a_session_not_joined_is_not_in_session(registry: Registry) -> None:
    alice, box = peer(registry, "alice")
    alice.handle(LeaveSession(session_id="s", id="x"))
    [error] = box.take()
    assert isinstance(error, Error)
    assert (error.code, error.reply_to) == ("not-in-session", "x")


def test_close_tells_every_session_exactly_once(registry: Registry) -> None:
    alice, alice_box = peer(registry, "alice")
    bob, _ = peer(registry, "bob")
    for session in ("s1", "s2"):
        alice.handle(JoinSession(session_id=session))
        bob.handle(JoinSession(session_id=session))
    alice_box.take()
    bob.close()
    bob.close()
    assert sorted(alice_box.take(), key=repr) == [
        UserLeft(session_id="s1", user_id="bob"),
        UserLeft(session_id="s2", user_id="bob"),
    ]


def test_second_connection_of_a_user_takes_the_seat(registry: Registry) -> None:
    alice, alice_box = peer(registry, "alice")
    old, old_box = peer(registry, "bob", "c_old")
    new, new_box = peer(registry, "bob", "c_new")
    alice.handle(JoinSession(session_id="s"))
    old.handle(JoinSession(session_id="s"))
    old.handle(JoinSession(session_id="other"))
    alice_box.take()
    old_box.take()
    new.handle(JoinSession(session_id="s"))
    [replaced] = old_box.take()
    assert isinstance(replaced, Error)
    assert (replaced.code, replaced.session_id) == ("replaced", "s")
    assert old.sessions == {"other"}
    assert new_box.take() == [SessionJoined(session_id="s", participants=["alice"])]
    assert alice_box.take() == [UserJoined(session_id="s", user_id="bob")]
    assert registry.seat("s", "bob") is new
    old.close()
    assert alice_box.take() == []
    assert registry.seat("other", "bob") is None
    new.close()
    assert alice_box.take() == [UserLeft(session_id="s", user_id="bob")]


def test_relay_sets_from_and_reaches_only_the_target(registry: Registry) -> None:
    alice, alice_box = peer(registry, "alice")
    bob, bob_box = peer(registry, "bob")
    carol, carol_box = peer(registry, "carol")
    for p in (alice, bob, carol):
        p.handle(JoinSession(session_id="s"))
    for box in (alice_box, bob_box, carol_box):
        box.take()
    alice.handle(Offer(to="bob", session_id="s", data=OFFER, id="o1"))
    candidate = {"candidate": {"candidate": "candidate:1", "sdpMid": "0"}}
    alice.handle(IceCandidate(to="bob", session_id="s", data=candidate))
    bob.handle(Answer(to="alice", session_id="s", data=OFFER))
    assert bob_box.take() == [
        RelayedOffer(from_="alice", to="bob", session_id="s", data=OFFER, id="o1"),
        RelayedIceCandidate(from_="alice", to="bob", session_id="s", data=candidate),
    ]
    assert alice_box.take() == [RelayedAnswer(from_="bob", to="alice", session_id="s", data=OFFER)]
    assert carol_box.take() == []


def test_relay_outside_the_session_or_to_a_stranger_is_refused(registry: Registry) -> None:
    alice, alice_box = peer(registry, "alice")
    bob, bob_box = peer(registry, "bob")
    bob.handle(JoinSession(session_id="s"))
    bob_box.take()
    alice.handle(Offer(to="bob", session_id="s", data=OFFER, id="a"))
    alice.handle(JoinSession(session_id="t"))
    alice.handle(Offer(to="bob", session_id="t", data=OFFER, id="b"))
    codes = [(f.code, f.reply_to) for f in alice_box.take() if isinstance(f, Error)]
    assert codes == [("not-in-session", "a"), ("peer-not-found", "b")]
    assert bob_box.take() == []


def test_session_cap_refuses_one_more(registry: Registry) -> None:
    peers = [peer(registry, f"u{i}") for i in range(4)]
    for p, _ in peers:
        p.handle(JoinSession(session_id="s", id="j"))
    [refused] = peers[3][1].take()
    assert isinstance(refused, Error)
    assert refused.code == "session-full"
    assert len(registry.participants("s")) == 3
    # a user already seated may still re-join a full session
    peers[0][0].handle(JoinSession(session_id="s", id="again"))
    assert isinstance(peers[0][1].take()[-1], SessionJoined)


def test_second_auth_is_a_bad_frame(registry: Registry) -> None:
    alice, box = peer(registry, "alice")
    alice.handle(Auth(user_id="mallory", id="a2"))
    [error] = box.take()
    assert isinstance(error, Error)
    assert (error.code, error.reply_to) == ("bad-frame", "a2")
    assert alice.user_id == "alice"


def test_connection_state_is_logged_not_relayed(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    alice, alice_box = peer(registry, "alice")
    bob, bob_box = peer(registry, "bob")
    alice.handle(JoinSession(session_id="s"))
    bob.handle(JoinSession(session_id="s"))
    alice_box.take()
    bob_box.take()
    with caplog.at_level("INFO", logger="signaling.peer"):
        alice.handle(ConnectionState(session_id="s", state="connected"))
    assert alice_box.take() == bob_box.take() == []
    assert any(
        getattr(r, "connection_id", None) == "c_alice" and r.getMessage().endswith(": connected")
        for r in caplog.records
    )


def test_ten_thousand_abandoned_sessions_leave_the_registry_empty() -> None:
    registry = Registry(max_participants=2)
    users = [peer(registry, f"user{i}") for i in range(100)]
    for n in range(10_000):
        p, _ = users[n % 100]
        p.handle(JoinSession(session_id=f"session-{n}"))
        if n % 2:
            p.handle(LeaveSession(session_id=f"session-{n}"))
    assert registry.session_count == 5_000
    for p, _ in users:
        p.close()
    assert registry.session_count == 0
    assert registry.participant_count == 0


def test_core_imports_no_io_libraries() -> None:
    code = (
        "import sys, signaling.core; "
        "bad = [m for m in ('trio', 'quart', 'quart_trio', 'hypercorn', 'coredis', 'httpx') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
