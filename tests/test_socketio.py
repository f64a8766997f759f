"""The old server's clients: the real socket.io-client (npm) against our server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from signaling.client import connect
from signaling.frames import RelayedAnswer, RelayedOffer, UserJoined, UserLeft

from .conftest import CHROMIUM_CALL, SOCKETIO_DIR, TEST_SETTINGS, Server, chromium_call

CALL = chromium_call()
HERE = SOCKETIO_DIR


class NodeClient:
    """One socket.io-client in a node process: commands in, events out."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(
        cls, server: Server, user: str, session: str = "", transports: str = "websocket"
    ) -> NodeClient:
        """tests/socketio/client.mjs: a client driven by ``{"emit": …}`` commands."""
        return await cls.script("client.mjs", server.http, user, session, transports)

    @classmethod
    async def script(cls, name: str, *args: str) -> NodeClient:
        """Any script of tests/socketio that prints JSON lines with an ``event`` key."""
        process = await trio.lowlevel.open_process(
            ["node", str(HERE / name), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=HERE,
        )
        return cls(process)

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")

    async def next(self, name: str) -> dict[str, Any]:
        """The next event called ``name`` (others are kept in ``events``)."""
        assert self.process.stdout is not None
        with trio.fail_after(10):
            while True:
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    event: dict[str, Any] = json.loads(line)
                    self.events.append(event)
                    if event.get("event") == name or event.get("ack") == name:
                        return event
                chunk = await self.process.stdout.receive_some()
                assert chunk, f"node client exited; saw {self.events}"
                self.buffer += chunk

    async def close(self) -> None:
        await self.send({"close": True})
        with trio.fail_after(10):
            await self.process.wait()


async def test_socketio_clients_call_each_other(server: Server, node_modules: Path) -> None:
    alice = await NodeClient.start(server, "alice", "room")
    assert (await alice.next("connect"))["transport"] == "websocket"
    bob = await NodeClient.start(server, "bob", "room")
    await bob.next("connect")
    joined = await alice.next("user-joined")
    assert joined["args"][0] | {} == {"type": "user-joined", "sessionId": "room", "userId": "bob"}
    await bob.send(
        {
            "emit": "signal:offer",
            "payload": {
                "type": "offer",
                "from": "mallory",
                "to": "alice",
                "sessionId": "room",
                "data": {"sdp": CALL["offer"]},
            },
        }
    )
    offer = (await alice.next("signal:offer"))["args"][0]
    assert offer == {
        "type": "offer",
        "from": "bob",
        "to": "alice",
        "sessionId": "room",
        "data": {"sdp": CALL["offer"]},
    }
    await alice.send(
        {
            "emit": "signal:answer",
            "payload": {
                "type": "answer",
                "to": "bob",
                "sessionId": "room",
                "data": {"sdp": CALL["answer"]},
            },
        }
    )
    answer = (await bob.next("signal:answer"))["args"][0]
    assert (answer["from"], answer["data"]) == ("alice", {"sdp": CALL["answer"]})
    for candidate in CALL["offerCandidates"]:
        await bob.send(
            {
                "emit": "signal:ice-candidate",
                "payload": {
                    "type": "ice-candidate",
                    "to": "alice",
                    "sessionId": "room",
                    "data": {"candidate": candidate},
                },
            }
        )
    for candidate in CALL["offerCandidates"]:
        got = (await alice.next("signal:ice-candidate"))["args"][0]
        assert (got["from"], got["data"]) == ("bob", {"candidate": candidate})
    # and the other way round: all three signal types from alice to bob
    for event, data in (
        ("signal:offer", {"sdp": CALL["offer"]}),
        ("signal:answer", {"sdp": CALL["answer"]}),
        ("signal:ice-candidate", {"candidate": CALL["answerCandidates"][0]}),
        ("signal:ice-candidate", {"candidate": None}),
    ):
        await alice.send(
            {"emit": event, "payload": {"to": "bob", "sessionId": "room", "data": data}}
        )
        got = (await bob.next(event))["args"][0]
        assert (got["from"], got["to"], got["data"]) == ("alice", "bob", data)
    await bob.close()
    left = await alice.next("user-left")
    assert left["args"][0]["userId"] == "bob"
    await alice.close()


async def test_a_socketio_client_and_a_v1_client_share_a_session(
    server: Server, node_modules: Path
) -> None:
    alice = await NodeClient.start(server, "alice", "mixed")
    await alice.next("connect")
    async with connect(server.url, user_id="bob") as bob:
        assert (await bob.join("mixed")).participants == ["alice"]
        await alice.next("user-joined")
        await bob.send_offer("alice", "mixed", CALL["offer"])
        offer = (await alice.next("signal:offer"))["args"][0]
        assert (offer["from"], offer["data"]) == ("bob", {"sdp": CALL["offer"]})
        await alice.send(
            {
                "emit": "signal:answer",
                "payload": {"to": "bob", "sessionId": "mixed", "data": {"sdp": CALL["answer"]}},
            }
        )
        with trio.fail_after(5):
            frame = await bob.receive()
        assert isinstance(frame, RelayedAnswer)
        assert frame.from_ == "alice"
    await alice.close()


async def test_join_session_event_with_an_acknowledgement(
    server: Server, node_modules: Path
) -> None:
    alice = await NodeClient.start(server, "alice")
    await alice.next("connect")
    async with connect(server.url, user_id="bob") as bob:
        await bob.join("acked")
        await alice.send({"emit": "join-session", "payload": {"sessionId": "acked"}, "ack": True})
        reply = (await alice.next("join-session"))["args"][0]
        assert (reply["type"], reply["participants"]) == ("session-joined", ["bob"])
        with trio.fail_after(5):
            assert await bob.receive() == UserJoined(session_id="acked", user_id="alice")
    await alice.close()


async def test_refused_auth_is_a_connect_error(server: Server, node_modules: Path) -> None:
    client = await NodeClient.start(server, "")
    error = await client.next("connect_error")
    assert "invalid frame" in error["message"] or "userId" in error["message"]
    client.process.kill()


async def test_default_transports_long_polling_then_upgrade(
    server: Server, node_modules: Path
) -> None:
    alice = await NodeClient.start(server, "alice", "polled", transports="default")
    # socket.io-client's default: open on polling, then upgrade to WebSocket
    assert (await alice.next("open"))["transport"] == "polling"
    await alice.next("connect")  # the upgrade may come before or after the connect
    if not any(event.get("event") == "upgrade" for event in alice.events):
        await alice.next("upgrade")
    upgrades = [event for event in alice.events if event.get("event") == "upgrade"]
    assert upgrades[0]["transport"] == "websocket"
    bob = await NodeClient.start(server, "bob", "polled", transports="default")
    await bob.next("connect")
    assert (await alice.next("user-joined"))["args"][0]["userId"] == "bob"
    await bob.send(
        {
            "emit": "signal:offer",
            "payload": {
                "type": "offer",
                "to": "alice",
                "sessionId": "polled",
                "data": {"sdp": CALL["offer"]},
            },
        }
    )
    offer = (await alice.next("signal:offer"))["args"][0]
    assert (offer["from"], offer["data"]) == ("bob", {"sdp": CALL["offer"]})
    async with connect(server.url, user_id="carol") as carol:
        await carol.join("polled")
        await carol.send_candidate("alice", "polled", CALL["offerCandidates"][0])
        got = (await alice.next("signal:ice-candidate"))["args"][0]
        assert (got["from"], got["data"]) == ("carol", {"candidate": CALL["offerCandidates"][0]})
    await bob.close()
    assert (await alice.next("user-left"))["args"][0]["userId"] in {"carol", "bob"}
    await alice.close()


async def test_socketio_client_reconnects_after_a_server_close(
    server: Server, node_modules: Path
) -> None:
    alice = await NodeClient.start(server, "alice", "again")
    await alice.next("connect")
    for connection in list(server.hub.connections):
        if connection.user_id == "alice":
            connection.close(1001, "going away (test)")
    await alice.next("disconnect")
    await alice.next("connect")
    assert server.hub.registry.participants("again") == ["alice"]
    await alice.close()


@pytest.mark.parametrize("transports", ["websocket", "default"])
async def test_a_socketio_client_that_drops_resumes_and_nobody_notices(
    server: Server, node_modules: Path, transports: str
) -> None:
    """socket.io-client sends back the CONNECT's pid after a drop (its connection
    state recovery): the server resumes it (protocol/SPEC.md §10)."""
    async with connect(server.url, user_id="bob") as bob:
        await bob.join("calls")
        alice = await NodeClient.start(server, "alice", "calls", transports)
        await alice.next("connect")
        with trio.fail_after(5):
            assert await bob.receive() == UserJoined(session_id="calls", user_id="alice")
        (old,) = [c for c in server.hub.connections if c.user_id == "alice"]
        connection_id = old.connection_id
        old.close(1001, "node restarting (test)")
        await alice.next("disconnect")
        # while alice is away, bob's signals to her are held
        for n in range(3):
            await bob.send_candidate(
                "alice", "calls", {**CALL["offerCandidates"][0], "sdpMid": str(n)}
            )
        await alice.next("connect")
        held = [(await alice.next("signal:ice-candidate"))["args"][0] for _ in range(3)]
        assert [c["data"]["candidate"]["sdpMid"] for c in held] == ["0", "1", "2"]
        assert server.hub.stats.resumes["resumed"] == 1
        (new,) = [c for c in server.hub.connections if c.user_id == "alice"]
        assert new.connection_id == connection_id
        # bob heard neither user-left nor user-joined, and the call goes on
        await alice.send(
            {
                "emit": "signal:answer",
                "payload": {"to": "bob", "sessionId": "calls", "data": {"sdp": CALL["answer"]}},
            }
        )
        with trio.fail_after(5):
            frame = await bob.receive()
        assert isinstance(frame, RelayedAnswer)
        await alice.close()  # a Socket.IO disconnect: leaves at once
        with trio.fail_after(5):
            assert await bob.receive() == UserLeft(session_id="calls", user_id="alice")


async def _old_readme_client(server: Server, role: str) -> NodeClient:
    return await NodeClient.script("old-readme.mjs", server.http, role, str(CHROMIUM_CALL))


def _values(client: NodeClient, name: str) -> list[Any]:
    return [event["value"] for event in client.events if event.get("event") == name]


async def test_old_readme_snippets_verbatim_make_a_call(server: Server, node_modules: Path) -> None:
    """The old README's Connection Flow, as written, between two socket.io-clients."""
    caller = await _old_readme_client(server, "caller")
    await caller.next("connect")
    callee = await _old_readme_client(server, "callee")
    await callee.next("connect")
    assert (await caller.next("log"))["value"] == "User user_456 joined"
    await caller.send({"offer": True})
    # offer -> callee (message.data.sdp), answer -> caller, candidates both ways
    assert (await callee.next("remote-description"))["value"] == CALL["offer"]
    answer = (await caller.next("answer"))["value"]
    assert answer == {
        "type": "answer",
        "from": "user_456",
        "to": "user_123",
        "sessionId": "session_456",
        "data": {"sdp": CALL["answer"]},
    }
    assert (await caller.next("remote-description"))["value"] == CALL["answer"]
    sent_by_caller = [c for c in CALL["offerCandidates"] if c is not None]
    sent_by_callee = [c for c in CALL["answerCandidates"] if c is not None]
    for _ in sent_by_caller:
        await callee.next("candidate")
    for _ in sent_by_callee:
        await caller.next("candidate")
    for receiver, sender, candidates in (
        (callee, "user_123", sent_by_caller),
        (caller, "user_456", sent_by_callee),
    ):
        got = _values(receiver, "candidate")
        assert [m["data"] for m in got] == [{"candidate": c} for c in candidates]
        assert {(m["type"], m["from"], m["sessionId"]) for m in got} == {
            ("ice-candidate", sender, "session_456")
        }
    # connect with auth.sessionId, then join-session: one user-joined, no error at all
    await callee.send({"close": True})
    assert (await caller.next("log"))["value"] == "User user_456 left"
    await caller.send({"close": True})
    for client in (caller, callee):
        with trio.fail_after(10):
            await client.process.wait()
    assert _values(caller, "log") == ["User user_456 joined", "User user_456 left"]
    assert _values(callee, "log") == []
    assert _values(caller, "error") == _values(callee, "error") == []
    assert _values(caller, "offer") == []


async def test_old_readme_caller_and_a_v1_callee(server: Server, node_modules: Path) -> None:
    """A mixed session: the old README's caller, a protocol v1 client answering it."""
    async with connect(server.url, user_id="user_456") as callee:
        await callee.join("session_456")
        caller = await _old_readme_client(server, "caller")
        await caller.next("connect")
        with trio.fail_after(5):
            assert await callee.receive() == UserJoined(
                session_id="session_456", user_id="user_123"
            )
        await caller.send({"offer": True})
        with trio.fail_after(5):
            offer = await callee.receive()
            assert isinstance(offer, RelayedOffer)
            assert (offer.from_, offer.data) == ("user_123", {"sdp": CALL["offer"]})
            candidates = [await callee.receive() for c in CALL["offerCandidates"] if c is not None]
        assert [c.data for c in candidates] == [  # type: ignore[union-attr]
            {"candidate": c} for c in CALL["offerCandidates"] if c is not None
        ]
        await callee.send_answer("user_123", "session_456", CALL["answer"], extra={"callId": 7})
        for candidate in CALL["answerCandidates"]:
            await callee.send_candidate("user_123", "session_456", candidate)
        answer = (await caller.next("answer"))["value"]
        assert answer["data"] == {"sdp": CALL["answer"], "callId": 7}
        assert (await caller.next("remote-description"))["value"] == CALL["answer"]
        for candidate in CALL["answerCandidates"]:
            got = (await caller.next("candidate"))["value"]
            assert (got["from"], got["data"]) == ("user_456", {"candidate": candidate})
        await caller.close()
    assert _values(caller, "error") == []


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(rate_limit=10.0, rate_burst=10, flood_strikes=20)]
)
async def test_a_socketio_burst_over_the_limit_is_delivered_or_answered(
    server: Server, node_modules: Path
) -> None:
    """The old server's limit (10/s, burst 10), 30 candidates at once: none vanishes."""
    alice = await NodeClient.start(server, "alice", "burst")
    await alice.next("connect")
    bob = await NodeClient.start(server, "bob", "burst")
    await bob.next("connect")
    await alice.next("user-joined")
    for n in range(30):
        candidate = {**CALL["offerCandidates"][0], "sdpMid": str(n)}
        await bob.send(
            {
                "emit": "signal:ice-candidate",
                "payload": {"to": "alice", "sessionId": "burst", "data": {"candidate": candidate}},
            }
        )
    errors = [(await bob.next("error"))["args"][0] for _ in range(21)]  # its join took a token
    delivered = [(await alice.next("signal:ice-candidate"))["args"][0] for _ in range(9)]
    assert {(e["code"], e["event"]) for e in errors} == {("rate-limited", "signal:ice-candidate")}
    assert all(0 < e["retryAfterMs"] <= 1000 for e in errors)
    assert [d["data"]["candidate"]["sdpMid"] for d in delivered] == [str(n) for n in range(9)]
    await bob.close()
    await alice.next("user-left")
    assert not [e for e in alice.events if e.get("event") == "signal:ice-candidate"][9:]
    await alice.close()
