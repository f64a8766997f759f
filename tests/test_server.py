"""Every rule of protocol/SPEC.md §5, in both encodings, on an in-memory listener.

The server listens on a `MemoryListener` (socket pairs: no port, no network),
and the tests that wait for a timeout run on trio's autojump clock, which
skips the wait instead of sleeping through it. The transports' own suites
(test_transport_contract, test_adversarial, ...) run over TCP on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
import trio_websocket
from trio.testing import MockClock

from signaling.client import Client
from signaling.errors import NotInSession, PeerNotFound, SessionFull
from signaling.frames import (
    Error,
    Offer,
    RelayedAnswer,
    RelayedIceCandidate,
    RelayedOffer,
    UserJoined,
    UserLeft,
    Welcome,
)
from signaling.server import Settings

from .conftest import TEST_SETTINGS, Server, chromium_call

CALL = chromium_call()


@pytest.fixture
def server(memory_server: Server) -> Server:
    """This suite's server listens in memory."""
    return memory_server


@asynccontextmanager
async def raw(
    server: Server, subprotocol: str | None = "signaling.v1.json"
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    protocols = [subprotocol] if subprotocol else None
    async with server.websocket(protocols) as ws:
        yield ws


def dumps(frame: dict[str, Any], encoding: str = "json") -> str | bytes:
    return json.dumps(frame) if encoding == "json" else msgspec.msgpack.encode(frame)


def loads(message: str | bytes) -> dict[str, Any]:
    result: dict[str, Any] = (
        json.loads(message) if isinstance(message, str) else msgspec.msgpack.decode(message)
    )
    return result


async def closed_with(ws: trio_websocket.WebSocketConnection) -> tuple[int, list[dict[str, Any]]]:
    """Read until the server closes; return the close code and the frames before it."""
    frames = []
    with trio.fail_after(10):
        try:
            while True:
                frames.append(loads(await ws.get_message()))
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
    assert reason is not None
    return reason.code, frames


async def next_frame(client: Client) -> Any:
    with trio.fail_after(5):
        return await client.receive()


async def test_welcome_names_the_user_connection_and_ice_servers(
    server: Server, encoding: str
) -> None:
    async with server.connect(user_id="alice", encoding=encoding) as alice:
        welcome = alice.welcome
        assert isinstance(welcome, Welcome)
        assert welcome.user_id == "alice"
        assert welcome.connection_id.startswith("c_")
        assert msgspec.to_builtins(welcome.ice_servers) == [
            {"urls": "stun:stun.l.google.com:19302"},
            {"urls": "stun:stun1.l.google.com:19302"},
        ]


async def test_subprotocol_is_echoed_and_json_is_the_default(server: Server) -> None:
    async with raw(server, "signaling.v1.msgpack") as ws:
        assert ws.subprotocol == "signaling.v1.msgpack"
        await ws.send_message(msgspec.msgpack.encode({"type": "auth", "userId": "a"}))
        assert loads(await ws.get_message())["type"] == "welcome"
    async with raw(server, None) as ws:
        assert ws.subprotocol is None
        await ws.send_message('{"type": "auth", "userId": "a"}')
        message = await ws.get_message()
        assert isinstance(message, str)
        assert loads(message)["type"] == "welcome"


async def test_first_frame_must_be_auth(server: Server) -> None:
    async with raw(server) as ws:
        await ws.send_message(json.dumps({"type": "join-session", "sessionId": "s", "id": "j"}))
        code, frames = await closed_with(ws)
    assert code == 4401
    assert [(f["type"], f["code"], f["replyTo"]) for f in frames] == [
        ("error", "unauthorized", "j")
    ]


async def test_malformed_first_frame_is_a_bad_frame_then_4401(server: Server) -> None:
    async with raw(server) as ws:
        await ws.send_message("{nope")
        code, frames = await closed_with(ws)
    assert code == 4401
    assert [f["code"] for f in frames] == ["bad-frame"]


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(auth_timeout=0.2)])
async def test_no_auth_within_the_timeout_closes_4408(
    server: Server, autojump_clock: MockClock
) -> None:
    async with raw(server) as ws:
        code, frames = await closed_with(ws)
    assert (code, frames) == (4408, [])
    assert not server.hub.connections


async def test_join_tells_participants_and_leave_tells_them_once(
    server: Server, encoding: str
) -> None:
    async with (
        server.connect(user_id="alice", encoding=encoding) as alice,
        server.connect(user_id="bob") as bob,
    ):
        assert (await alice.join("s")).participants == []
        joined = await bob.join("s")
        assert (joined.session_id, joined.participants) == ("s", ["alice"])
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        left = await bob.leave("s")
        assert left.session_id == "s"
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")
        with pytest.raises(NotInSession):
            await bob.leave("s")
        await bob.join("s")
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")


async def test_disconnect_sends_user_left_exactly_once(server: Server, encoding: str) -> None:
    async with server.connect(user_id="alice", encoding=encoding) as alice:
        await alice.join("s")
        async with server.connect(user_id="bob") as bob:
            await bob.join("s")
            await bob.join("t")
            assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")
        async with server.connect(user_id="carol") as carol:
            await carol.join("s")
            # the next frame after bob's single user-left is carol's arrival
            assert await next_frame(alice) == UserJoined(session_id="s", user_id="carol")
    assert server.hub.registry.session_count == 0


async def test_second_connection_of_a_user_takes_the_seat(server: Server, encoding: str) -> None:
    async with (
        server.connect(user_id="alice", encoding=encoding) as alice,
        server.connect(user_id="bob") as old_bob,
        server.connect(user_id="bob", encoding=encoding) as new_bob,
    ):
        await alice.join("s")
        await old_bob.join("s")
        await old_bob.join("other")
        await alice.join("other")
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        assert await next_frame(old_bob) == UserJoined(session_id="other", user_id="alice")
        joined = await new_bob.join("s")
        assert joined.participants == ["alice"]
        replaced = await next_frame(old_bob)
        assert isinstance(replaced, Error)
        assert (replaced.code, replaced.session_id) == ("replaced", "s")
        # the others get a fresh user-joined and no user-left
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        # relays in "s" reach the new connection; the old one keeps "other"
        await alice.send_offer("bob", "s", CALL["offer"])
        offer = await next_frame(new_bob)
        assert isinstance(offer, RelayedOffer)
        assert offer.session_id == "s"
        await alice.send_offer("bob", "other", CALL["offer"])
        offer = await next_frame(old_bob)
        assert isinstance(offer, RelayedOffer)
        assert offer.session_id == "other"
        with pytest.raises(NotInSession):
            await old_bob.leave("s")


async def test_relay_carries_real_sdp_and_candidates_intact_across_encodings(
    server: Server, encoding: str
) -> None:
    async with (
        server.connect(user_id="alice", encoding=encoding) as alice,
        server.connect(user_id="bob", encoding="msgpack") as bob,
    ):
        await alice.join("call")
        await bob.join("call")
        await next_frame(alice)
        await alice.send_offer("bob", "call", CALL["offer"])
        for candidate in CALL["offerCandidates"]:
            await alice.send_candidate("bob", "call", candidate)
        await bob.send_answer("alice", "call", CALL["answer"])
        for candidate in CALL["answerCandidates"]:
            await bob.send_candidate("alice", "call", candidate)

        offer = await next_frame(bob)
        assert isinstance(offer, RelayedOffer)
        assert (offer.from_, offer.to) == ("alice", "bob")
        assert offer.data == {"sdp": CALL["offer"]}
        for candidate in CALL["offerCandidates"]:
            relayed = await next_frame(bob)
            assert isinstance(relayed, RelayedIceCandidate)
            assert relayed.data == {"candidate": candidate}
        answer = await next_frame(alice)
        assert isinstance(answer, RelayedAnswer)
        assert answer.from_ == "bob"
        assert answer.data == {"sdp": CALL["answer"]}
        for candidate in CALL["answerCandidates"]:
            relayed = await next_frame(alice)
            assert isinstance(relayed, RelayedIceCandidate)
            assert relayed.data == {"candidate": candidate}


async def test_from_is_set_by_the_server(server: Server, encoding: str) -> None:
    async with (
        raw(server, f"signaling.v1.{encoding}") as mallory,
        server.connect(user_id="bob") as bob,
    ):
        await mallory.send_message(dumps({"type": "auth", "userId": "mallory"}, encoding))
        await mallory.get_message()
        await mallory.send_message(dumps({"type": "join-session", "sessionId": "s"}, encoding))
        await mallory.get_message()
        await bob.join("s")
        spoofed = {
            "type": "offer",
            "from": "alice",
            "to": "bob",
            "sessionId": "s",
            "data": {"sdp": CALL["offer"]},
        }
        await mallory.send_message(dumps(spoofed, encoding))
        offer = await next_frame(bob)
        assert isinstance(offer, RelayedOffer)
        assert offer.from_ == "mallory"


async def test_relay_errors_reply_to_the_frame(server: Server, encoding: str) -> None:
    async with (
        raw(server, f"signaling.v1.{encoding}") as alice,
        server.connect(user_id="bob") as bob,
    ):
        await alice.send_message(dumps({"type": "auth", "userId": "alice"}, encoding))
        await alice.get_message()
        await bob.join("s")
        offer = {"type": "offer", "to": "bob", "sessionId": "s", "data": {"sdp": CALL["offer"]}}
        await alice.send_message(dumps({**offer, "id": "o1"}, encoding))
        assert loads(await alice.get_message()) | {"message": ""} == {
            "type": "error",
            "code": "not-in-session",
            "replyTo": "o1",
            "message": "",
        }
        await alice.send_message(dumps({"type": "join-session", "sessionId": "s"}, encoding))
        await alice.get_message()
        await alice.send_message(dumps({**offer, "to": "nobody", "id": "o2"}, encoding))
        reply = loads(await alice.get_message())
        assert (reply["code"], reply["replyTo"]) == ("peer-not-found", "o2")
    async with server.connect(user_id="carol") as carol:
        await carol.join("x")
        with pytest.raises(PeerNotFound):
            await carol.request(msgspec.convert({**offer, "sessionId": "x"}, Offer))


async def test_messages_from_one_sender_arrive_in_order(server: Server, encoding: str) -> None:
    async with (
        server.connect(user_id="alice", encoding=encoding) as alice,
        server.connect(user_id="bob", encoding=encoding) as bob,
    ):
        await alice.join("s")
        await bob.join("s")
        await next_frame(alice)
        template = CALL["offerCandidates"][0]
        count = 500

        async def send() -> None:
            for n in range(count):
                await alice.send_candidate("bob", "s", {**template, "candidate": f"candidate:{n}"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            for n in range(count):
                frame = await next_frame(bob)
                assert isinstance(frame, RelayedIceCandidate)
                assert frame.data["candidate"]["candidate"] == f"candidate:{n}"


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[]",
        '{"type": "teleport"}',
        '{"type": "join-session"}',
        '{"type": "join-session", "sessionId": 42, "id": "b1"}',
    ],
)
async def test_bad_frame_gets_an_error_and_the_connection_stays(server: Server, bad: str) -> None:
    async with raw(server) as ws:
        await ws.send_message(json.dumps({"type": "auth", "userId": "alice"}))
        await ws.get_message()
        await ws.send_message(bad)
        error = loads(await ws.get_message())
        assert (error["type"], error["code"]) == ("error", "bad-frame")
        if '"b1"' in bad:
            assert error["replyTo"] == "b1"
        await ws.send_message(json.dumps({"type": "join-session", "sessionId": "s", "id": "ok"}))
        assert loads(await ws.get_message())["type"] == "session-joined"


async def test_wrong_message_kind_for_the_encoding_is_a_bad_frame(server: Server) -> None:
    async with raw(server, "signaling.v1.msgpack") as ws:
        await ws.send_message(msgspec.msgpack.encode({"type": "auth", "userId": "a"}))
        await ws.get_message()
        await ws.send_message('{"type": "join-session", "sessionId": "s"}')
        error = loads(await ws.get_message())
        assert error["code"] == "bad-frame"
        assert "binary" in error["message"]


async def test_invalid_utf8_text_closes_1007(server: Server) -> None:
    async with raw(server) as ws:
        await ws.send_message(json.dumps({"type": "auth", "userId": "alice"}))
        await ws.get_message()
        # trio-websocket only sends valid text; write the frame by hand
        await ws._stream.send_all(_masked_text(b'{"type": "join-session", "sessionId": "\xff"}'))
        code, _ = await closed_with(ws)
    assert code == 1007


def _masked_text(payload: bytes) -> bytes:
    key = b"\x00\x00\x00\x00"
    return bytes([0x81, 0x80 | len(payload)]) + key + payload


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(max_message_bytes=1000)])
async def test_message_over_the_limit_closes_1009(server: Server) -> None:
    async with raw(server) as ws:
        await ws.send_message(json.dumps({"type": "auth", "userId": "alice"}))
        await ws.get_message()
        await ws.send_message(json.dumps({"type": "join-session", "sessionId": "x" * 1000}))
        code, _ = await closed_with(ws)
    assert code == 1009


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(max_participants=2)])
async def test_session_cap_refuses_with_session_full(server: Server) -> None:
    async with (
        server.connect(user_id="a") as a,
        server.connect(user_id="b") as b,
        server.connect(user_id="c") as c,
    ):
        await a.join("s")
        await b.join("s")
        with pytest.raises(SessionFull):
            await c.join("s")
        assert await next_frame(a) == UserJoined(session_id="s", user_id="b")
        await b.leave("s")
        assert (await c.join("s")).participants == ["a"]


async def test_connection_state_is_logged(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        with caplog.at_level(logging.INFO, logger="signaling"):
            await alice.report_state("s", "connected")
            await alice.join("s")  # a round trip: the state frame was processed before it
    assert any(
        getattr(r, "connection_id", None) == alice.connection_id
        and r.getMessage() == "connection state in session s: connected"
        for r in caplog.records
    )


async def test_ping_is_answered_with_pong(server: Server) -> None:
    async with raw(server) as ws:
        with trio.fail_after(5):
            await ws.ping(b"are you there")


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(outbox_frames=64, outbox_bytes=256 * 1024)]
)
async def test_client_that_stops_reading_is_closed_and_nobody_else_notices(
    server: Server, nursery: trio.Nursery
) -> None:
    async with (
        server.connect(user_id="alice") as alice,
        server.connect(user_id="carol") as carol,
    ):
        await alice.join("s")
        await carol.join("s")
        await next_frame(alice)
        # A client with a tiny receive buffer that never reads after joining.
        stream = await server.open_stream()
        stream.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, "127.0.0.1", "/ws", subprotocols=["signaling.v1.json"]
        )
        await ws.send_message(json.dumps({"type": "auth", "userId": "slow"}))
        await ws.send_message(json.dumps({"type": "join-session", "sessionId": "s"}))
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="slow")
        await next_frame(carol)
        big = {"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 9000}
        with trio.fail_after(20):
            for _ in range(400):
                await alice.send_offer("slow", "s", big)
                if not any(c.user_id == "slow" for c in server.hub.connections):
                    break
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="slow")
        assert await next_frame(carol) == UserLeft(session_id="s", user_id="slow")
        # alice and carol carry on
        await alice.send_offer("carol", "s", CALL["offer"])
        relayed = await next_frame(carol)
        assert isinstance(relayed, RelayedOffer)
        assert relayed.from_ == "alice"
        await stream.aclose()


async def test_shutdown_closes_every_connection_with_1001(server: Server) -> None:
    async with server.connect(user_id="alice") as alice, raw(server) as ws:
        server.stop.set()
        with trio.fail_after(5):
            frames = [frame async for frame in alice]
        assert frames == []
        assert alice.closed is not None
        assert alice.closed.code == 1001
        code, _ = await closed_with(ws)
        assert code == 1001


async def test_many_clients_in_many_sessions(server: Server) -> None:
    async with trio.open_nursery() as nursery:

        async def pair(n: int) -> None:
            async with (
                server.connect(user_id=f"a{n}") as a,
                server.connect(user_id=f"b{n}", encoding="msgpack") as b,
            ):
                await a.join(f"s{n}")
                await b.join(f"s{n}")
                await next_frame(a)
                await a.send_offer(f"b{n}", f"s{n}", CALL["offer"])
                frame = await next_frame(b)
                assert isinstance(frame, RelayedOffer)
                assert frame.session_id == f"s{n}"

        for n in range(50):
            nursery.start_soon(pair, n)
    assert server.hub.registry.session_count == 0


def test_settings_replace_keeps_other_values() -> None:
    changed = Settings().replace(port=9)
    assert (changed.port, changed.max_participants) == (9, Settings().max_participants)


class RawClient:
    """A wsproto client over a bare TCP stream, to see and withhold pongs."""

    def __init__(self, stream: trio.SocketStream) -> None:
        from wsproto import ConnectionType, WSConnection

        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def open(cls, server: Server, user_id: str, session_id: str) -> RawClient:
        from wsproto.events import AcceptConnection, Request, TextMessage

        client = cls(await server.open_stream())
        await client.send(Request(host="127.0.0.1", target="/ws"))
        with trio.fail_after(5):
            assert isinstance((await client.events())[0], AcceptConnection)
            await client.send(TextMessage(json.dumps({"type": "auth", "userId": user_id})))
            join = {"type": "join-session", "sessionId": session_id}
            await client.send(TextMessage(json.dumps(join)))
            texts: list[str] = []
            while len(texts) < 2:
                texts += [e.data for e in await client.events() if isinstance(e, TextMessage)]
        assert [json.loads(t)["type"] for t in texts] == ["welcome", "session-joined"]
        return client

    async def send(self, event: Any) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def events(self) -> list[Any]:
        data = await self.stream.receive_some(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())


@pytest.mark.parametrize(
    "settings",
    # resume off: the seat goes at once (with resume: tests/test_resume.py)
    [TEST_SETTINGS.replace(ping_interval=0.1, ping_timeout=0.1, resume_window=0)],
)
async def test_silent_client_is_closed_after_missed_pings(
    server: Server, autojump_clock: MockClock
) -> None:
    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        silent = await RawClient.open(server, "silent", "s")
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="silent")
        # silent never reads again, so it answers no ping
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="silent")
        await silent.stream.aclose()


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(ping_interval=0.1, ping_timeout=0.1)])
async def test_client_answering_pings_stays_connected(
    server: Server, autojump_clock: MockClock
) -> None:
    from wsproto.events import CloseConnection, Ping

    client = await RawClient.open(server, "bob", "s")
    pings = 0
    with trio.fail_after(10):
        while pings < 5:  # five intervals: well past the two-interval deadline
            for event in await client.events():
                assert not isinstance(event, CloseConnection)
                if isinstance(event, Ping):
                    pings += 1
                    await client.send(event.response())
    assert any(c.user_id == "bob" for c in server.hub.connections)
    await client.stream.aclose()


async def test_a_bug_in_one_connection_closes_only_that_connection(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signaling.core import Peer

    original = Peer.handle

    def handle(self: Peer, frame: Any) -> None:
        if getattr(frame, "session_id", None) == "boom":
            raise RuntimeError("injected bug")
        original(self, frame)

    monkeypatch.setattr(Peer, "handle", handle)
    async with (
        server.connect(user_id="alice") as alice,
        server.connect(user_id="bob") as bob,
        raw(server) as victim,
    ):
        await alice.join("s")
        await bob.join("s")
        await next_frame(alice)
        await victim.send_message(json.dumps({"type": "auth", "userId": "victim"}))
        await victim.get_message()
        await victim.send_message(json.dumps({"type": "join-session", "sessionId": "boom"}))
        code, _ = await closed_with(victim)
        assert code == 1011
        await alice.send_offer("bob", "s", CALL["offer"])
        assert isinstance(await next_frame(bob), RelayedOffer)
