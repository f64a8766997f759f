"""The old server's clients: the real socket.io-client (npm) against our server."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from signaling.client import connect
from signaling.frames import RelayedAnswer, UserJoined

from .conftest import Server, chromium_call

CALL = chromium_call()
HERE = Path(__file__).resolve().parent / "socketio"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """``npm ci`` of the pinned socket.io-client (tests/socketio/package-lock.json)."""
    assert shutil.which("node"), "Node.js is needed"
    assert shutil.which("npm"), "npm is needed"
    if not (HERE / "node_modules" / "socket.io-client").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE, check=True, timeout=300
        )
    return HERE / "node_modules"


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
        process = await trio.lowlevel.open_process(
            ["node", str(HERE / "client.mjs"), server.http, user, session, transports],
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
                    event = json.loads(line)
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
                "data": CALL["offer"],
            },
        }
    )
    offer = (await alice.next("signal:offer"))["args"][0]
    assert offer == {
        "type": "offer",
        "from": "bob",
        "to": "alice",
        "sessionId": "room",
        "data": CALL["offer"],
    }
    await alice.send(
        {
            "emit": "signal:answer",
            "payload": {"type": "answer", "to": "bob", "sessionId": "room", "data": CALL["answer"]},
        }
    )
    answer = (await bob.next("signal:answer"))["args"][0]
    assert (answer["from"], answer["data"]) == ("alice", CALL["answer"])
    for candidate in CALL["offerCandidates"]:
        await bob.send(
            {
                "emit": "signal:ice-candidate",
                "payload": {
                    "type": "ice-candidate",
                    "to": "alice",
                    "sessionId": "room",
                    "data": candidate,
                },
            }
        )
    for candidate in CALL["offerCandidates"]:
        got = (await alice.next("signal:ice-candidate"))["args"][0]
        assert (got["from"], got["data"]) == ("bob", candidate)
    # and the other way round: all three signal types from alice to bob
    for event, data in (
        ("signal:offer", CALL["offer"]),
        ("signal:answer", CALL["answer"]),
        ("signal:ice-candidate", CALL["answerCandidates"][0]),
        ("signal:ice-candidate", None),
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
        assert (offer["from"], offer["data"]) == ("bob", CALL["offer"])
        await alice.send(
            {
                "emit": "signal:answer",
                "payload": {"to": "bob", "sessionId": "mixed", "data": CALL["answer"]},
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
                "data": CALL["offer"],
            },
        }
    )
    offer = (await alice.next("signal:offer"))["args"][0]
    assert (offer["from"], offer["data"]) == ("bob", CALL["offer"])
    async with connect(server.url, user_id="carol") as carol:
        await carol.join("polled")
        await carol.send_candidate("alice", "polled", CALL["offerCandidates"][0])
        got = (await alice.next("signal:ice-candidate"))["args"][0]
        assert (got["from"], got["data"]) == ("carol", CALL["offerCandidates"][0])
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
