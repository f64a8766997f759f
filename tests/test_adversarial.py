"""A hostile client, case by case: the expected error or close, no crash, nothing left
behind, and a call beside it carries on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
import trio_websocket

from signaling.client import Client, connect
from signaling.frames import RelayedIceCandidate

from .conftest import TEST_SETTINGS, Server, chromium_call

CALL = chromium_call()
CANDIDATE = CALL["offerCandidates"][0]


@pytest.fixture
async def bystanders(server: Server) -> AsyncIterator[tuple[Client, Client]]:
    async with (
        connect(server.url, user_id="alice") as alice,
        connect(server.url, user_id="bob", encoding="msgpack") as bob,
    ):
        await alice.join("calm")
        await bob.join("calm")
        with trio.fail_after(5):
            await alice.receive()
        yield alice, bob
        # the call carries on after whatever the hostile client did
        await alice.send_candidate("bob", "calm", CANDIDATE)
        with trio.fail_after(5):
            frame = await bob.receive()
        assert isinstance(frame, RelayedIceCandidate)
        assert frame.from_ == "alice"
        assert server.hub.registry.participants("calm") == ["alice", "bob"]


class Hostile:
    def __init__(self, ws: trio_websocket.WebSocketConnection, msgpack: bool) -> None:
        self.ws = ws
        self.msgpack = msgpack

    async def send(self, frame: Any) -> None:
        await self.ws.send_message(
            msgspec.msgpack.encode(frame) if self.msgpack else json.dumps(frame)
        )

    async def receive(self) -> dict[str, Any]:
        with trio.fail_after(5):
            message = await self.ws.get_message()
        result: dict[str, Any] = (
            msgspec.msgpack.decode(message) if isinstance(message, bytes) else json.loads(message)
        )
        return result

    async def closed(self) -> int:
        with trio.fail_after(5):
            try:
                while True:
                    await self.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                reason = exc.reason
        assert reason is not None
        return reason.code


async def hostile(
    server: Server, nursery: trio.Nursery, msgpack: bool, user: str | None = "mallory"
) -> Hostile:
    protocol = "signaling.v1.msgpack" if msgpack else "signaling.v1.json"
    ws = await trio_websocket.connect_websocket_url(nursery, server.url, subprotocols=[protocol])
    client = Hostile(ws, msgpack)
    if user is not None:
        await client.send({"type": "auth", "userId": user})
        assert (await client.receive())["type"] == "welcome"
    return client


@pytest.fixture(params=[False, True], ids=["json", "msgpack"])
def msgpack(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


MALFORMED = {
    "truncated object": ('{"type": "join-session", "sessionId": "s"', b"\x82\xa4type"),
    "not an object": ("[1, 2, 3]", msgspec.msgpack.encode([1, 2, 3])),
    "wrong field type": (
        json.dumps({"type": "join-session", "sessionId": ["s"]}),
        msgspec.msgpack.encode({"type": "join-session", "sessionId": ["s"]}),
    ),
    "unknown type": (
        json.dumps({"type": "teleport"}),
        msgspec.msgpack.encode({"type": "teleport"}),
    ),
    "type not a string": (
        json.dumps({"type": 7}),
        msgspec.msgpack.encode({"type": 7}),
    ),
    "huge string": (
        json.dumps({"type": "join-session", "sessionId": "x" * 60_000}),
        msgspec.msgpack.encode({"type": "join-session", "sessionId": "x" * 60_000}),
    ),
    "deeply nested": (
        '{"type": "join-session", "sessionId": "s", "x": ' + "[" * 20_000 + "]" * 20_000 + "}",
        b"\x83\xa4type\xacjoin-session\xa9sessionId\xa1s\xa1x" + b"\x91" * 50_000 + b"\xc0",
    ),
    "candidate with wrong types": (
        json.dumps(
            {
                "type": "ice-candidate",
                "to": "bob",
                "sessionId": "calm",
                "data": {"candidate": {"sdpMLineIndex": "zero"}},
            }
        ),
        msgspec.msgpack.encode(
            {
                "type": "ice-candidate",
                "to": "bob",
                "sessionId": "calm",
                "data": {"candidate": {"sdpMLineIndex": "zero"}},
            }
        ),
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_frames_get_bad_frame_and_the_connection_stays(
    server: Server,
    nursery: trio.Nursery,
    bystanders: tuple[Client, Client],
    msgpack: bool,
    case: str,
) -> None:
    client = await hostile(server, nursery, msgpack)
    text, binary = MALFORMED[case]
    await client.ws.send_message(binary if msgpack else text)
    error = await client.receive()
    assert (error["type"], error["code"]) == ("error", "bad-frame")
    await client.send({"type": "join-session", "sessionId": "mine", "id": "ok"})
    assert (await client.receive())["replyTo"] == "ok"
    await client.ws.aclose()


async def test_frames_before_auth_are_refused(
    server: Server, nursery: trio.Nursery, msgpack: bool
) -> None:
    client = await hostile(server, nursery, msgpack, user=None)
    await client.send(
        {"type": "offer", "to": "bob", "sessionId": "calm", "data": {"sdp": CALL["offer"]}}
    )
    assert (await client.receive())["code"] == "unauthorized"
    assert await client.closed() == 4401


async def test_second_auth_cannot_change_identity(
    server: Server, nursery: trio.Nursery, bystanders: tuple[Client, Client], msgpack: bool
) -> None:
    alice, bob = bystanders
    client = await hostile(server, nursery, msgpack)
    await client.send({"type": "auth", "userId": "alice", "id": "again"})
    error = await client.receive()
    assert (error["code"], error["replyTo"]) == ("bad-frame", "again")
    await client.send({"type": "join-session", "sessionId": "calm"})
    joined = await client.receive()
    assert sorted(joined["participants"]) == ["alice", "bob"]
    with trio.fail_after(5):
        arrival = await bob.receive()
    assert arrival.user_id == "mallory"  # type: ignore[union-attr]
    await client.send({"type": "leave-session", "sessionId": "calm"})
    await client.receive()
    with trio.fail_after(5):
        await bob.receive()  # user-left mallory
        await alice.receive()
        await alice.receive()


async def test_spoofed_from_and_relays_into_foreign_sessions(
    server: Server, nursery: trio.Nursery, bystanders: tuple[Client, Client], msgpack: bool
) -> None:
    client = await hostile(server, nursery, msgpack)
    await client.send(
        {
            "type": "offer",
            "from": "alice",
            "to": "bob",
            "sessionId": "calm",
            "data": {"sdp": CALL["offer"]},
            "id": "spoof",
        }
    )
    error = await client.receive()
    assert (error["code"], error["replyTo"]) == ("not-in-session", "spoof")


async def test_join_leave_storm_leaves_nothing_behind(
    server: Server, nursery: trio.Nursery, bystanders: tuple[Client, Client], msgpack: bool
) -> None:
    client = await hostile(server, nursery, msgpack)
    for n in range(300):
        await client.send({"type": "join-session", "sessionId": f"storm{n % 7}"})
        await client.send({"type": "leave-session", "sessionId": f"storm{n % 7}", "id": f"l{n}"})
    while (await client.receive()).get("replyTo") != "l299":
        pass
    assert server.hub.registry.session_count == 1  # only "calm"


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(max_sessions_per_connection=0)])
async def test_a_thousand_sessions_from_one_connection(
    server: Server, nursery: trio.Nursery, bystanders: tuple[Client, Client]
) -> None:
    client = await hostile(server, nursery, True)
    for n in range(1000):
        await client.send({"type": "join-session", "sessionId": f"many{n}", "id": f"j{n}"})
    while (await client.receive()).get("replyTo") != "j999":
        pass
    assert server.hub.registry.session_count == 1001
    await client.ws.aclose()
    with trio.fail_after(5):
        while server.hub.registry.session_count > 1:
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)


async def test_thousand_sessions_are_capped_by_default(
    server: Server, nursery: trio.Nursery
) -> None:
    client = await hostile(server, nursery, False)
    codes = []
    for n in range(40):
        await client.send({"type": "join-session", "sessionId": f"many{n}", "id": f"j{n}"})
    for _ in range(40):
        reply = await client.receive()
        codes.append(reply.get("code", reply["type"]))
    assert codes.count("session-joined") == TEST_SETTINGS.max_sessions_per_connection
    assert codes.count("forbidden") == 40 - TEST_SETTINGS.max_sessions_per_connection


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(max_connections_per_ip=3, resume_window=15)]
)
async def test_dropping_connections_cannot_fill_the_resume_table_from_one_address(
    server: Server,
) -> None:
    """An away connection counts against its IP until it resumes or leaves, so one
    address that joins and drops in a loop stops at its cap (protocol/SPEC.md §10)."""
    tokens = []
    for n in range(3):
        async with trio_websocket.open_websocket_url(server.url) as ws:
            await ws.send_message(json.dumps({"type": "auth", "userId": f"u{n}"}))
            tokens.append(json.loads(await ws.get_message())["resumeToken"])
            await ws.send_message(json.dumps({"type": "join-session", "sessionId": f"s{n}"}))
            await ws.get_message()
            await ws._stream.aclose()  # dropped, not closed: away
    with trio.fail_after(5):
        while len(server.hub.resumes) < 3:
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
    with pytest.raises(trio_websocket.ConnectionRejected) as refused:
        async with trio_websocket.open_websocket_url(server.url):
            pass  # pragma: no cover
    assert refused.value.status_code == 429
    # the table holds what the cap allows, and resuming frees the address's count
    assert len(server.hub.resumes) == 3
    server.hub.end_resumes()
    async with connect(server.url, user_id="u0") as again:
        assert again.welcome is not None
