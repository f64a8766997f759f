"""Resume (protocol/SPEC.md §10) on one node, every rule, in both encodings.

The server listens in memory; the tests that wait for a window to end run on
trio's autojump clock. A "drop" cuts the client's stream without a close
frame, as a network change does. The same rules over two nodes are in
tests/test_resume_cluster.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
import trio_websocket
from trio.testing import MockClock

from signaling.client import Client
from signaling.frames import UserJoined, UserLeft
from signaling.server import Settings
from signaling.server.auth import mint_join_token

from .conftest import TEST_SETTINGS, Server, chromium_call

CALL = chromium_call()
RESUMING = TEST_SETTINGS.replace(resume_window=15.0)
SECRET = "s" * 32
SUBPROTOCOL = {"json": "signaling.v1.json", "msgpack": "signaling.v1.msgpack"}


@pytest.fixture
def settings() -> Settings:
    return RESUMING


@pytest.fixture
def server(memory_server: Server) -> Server:
    return memory_server


class Raw:
    """A client that speaks frames as dicts and can drop its connection."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding

    async def send(self, frame: dict[str, Any]) -> None:
        if self.encoding == "json":
            await self.ws.send_message(json.dumps(frame))
        else:
            await self.ws.send_message(msgspec.msgpack.encode(frame))

    async def receive(self) -> dict[str, Any]:
        with trio.fail_after(5):
            message = await self.ws.get_message()
        assert isinstance(message, str) == (self.encoding == "json")
        frame: dict[str, Any] = (
            json.loads(message) if isinstance(message, str) else msgspec.msgpack.decode(message)
        )
        return frame

    async def drop(self) -> None:
        """Cut the stream: no close frame, as when the network goes."""
        await self.ws._stream.aclose()

    async def auth(self, user_id: str, resume: str | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "auth", "userId": user_id}
        if resume is not None:
            frame["resume"] = resume
        await self.send(frame)
        welcome = await self.receive()
        assert welcome["type"] == "welcome"
        return welcome

    async def join(self, session_id: str) -> dict[str, Any]:
        await self.send({"type": "join-session", "sessionId": session_id})
        reply = await self.receive()
        assert reply["type"] == "session-joined"
        return reply


@asynccontextmanager
async def raw(server: Server, encoding: str = "json") -> AsyncIterator[Raw]:
    async with server.websocket([SUBPROTOCOL[encoding]]) as ws:
        yield Raw(ws, encoding)


class Silent:
    """A wsproto client over a bare stream that authenticates, joins, and then
    reads only when told (so it answers no ping and its socket fills up)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        from wsproto import ConnectionType, WSConnection

        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def open(cls, server: Server, user_id: str, session_id: str) -> tuple[Silent, str]:
        """The client, and its resume token."""
        from wsproto.events import AcceptConnection, Request, TextMessage

        client = cls(await server.open_stream())
        await client.stream.send_all(client.ws.send(Request(host="memory", target="/ws")))
        with trio.fail_after(5):
            while not any(isinstance(e, AcceptConnection) for e in client.ws.events()):
                client.ws.receive_data(bytes(await client.stream.receive_some(65536)))
        for frame in (
            {"type": "auth", "userId": user_id},
            {"type": "join-session", "sessionId": session_id},
        ):
            await client.stream.send_all(client.ws.send(TextMessage(json.dumps(frame))))
        texts: list[str] = []
        with trio.fail_after(5):
            while len(texts) < 2:
                client.ws.receive_data(bytes(await client.stream.receive_some(65536)))
                texts += [e.data for e in client.ws.events() if isinstance(e, TextMessage)]
        return client, json.loads(texts[0])["resumeToken"]

    async def read_until_closed(self) -> list[dict[str, Any]]:
        """Every frame left in the socket, up to the server's close."""
        from wsproto.events import CloseConnection, TextMessage

        frames: list[dict[str, Any]] = []
        with trio.fail_after(10):
            while True:
                data = bytes(await self.stream.receive_some(1 << 20))
                self.ws.receive_data(data or None)
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        frames.append(json.loads(event.data))
                    elif isinstance(event, CloseConnection):
                        return frames
                if not data:
                    return frames


async def quiet(client: Client, seconds: float = 0.2) -> list[Any]:
    """Whatever ``client`` receives within ``seconds`` (expected: nothing)."""
    frames = []
    with trio.move_on_after(seconds):
        while True:
            frames.append(await client.receive())
    return frames


async def next_frame(client: Client) -> Any:
    with trio.fail_after(5):
        return await client.receive()


def away_count(server: Server) -> int:
    return len(server.hub.resumes)


async def wait_away(server: Server, count: int = 1) -> None:
    """Once the server has done all it can (it saw the drop: the listener is in
    memory, so nothing is in flight), ``count`` connections are away."""
    if isinstance(trio.lowlevel.current_clock(), MockClock):
        # all tasks blocked is when the autojump clock jumps (maybe past the
        # window): let a virtual moment pass instead
        await trio.sleep(0.01)
    else:
        await trio.testing.wait_all_tasks_blocked()
    assert away_count(server) == count


async def joined_then_dropped(server: Server, alice: Client, encoding: str = "json") -> str:
    """bob joins "s" (alice hears it) and his connection drops: his resume token."""
    async with raw(server, encoding) as bob:
        token: str = (await bob.auth("bob"))["resumeToken"]
        await bob.join("s")
        await next_frame(alice)
        await bob.drop()
    await wait_away(server)
    return token


def candidate(n: int) -> dict[str, Any]:
    return {**CALL["offerCandidates"][0], "sdpMid": str(n)}


async def test_welcome_carries_a_resume_token_and_the_window(server: Server, encoding: str) -> None:
    async with raw(server, encoding) as bob:
        welcome = await bob.auth("bob")
    assert welcome["resumeToken"].startswith("r_")
    assert welcome["resumeWindowMs"] == 15000
    assert "resumed" not in welcome  # only an auth that asked to resume is answered so


@pytest.mark.parametrize("settings", [RESUMING.replace(resume_window=0)])
async def test_a_window_of_0_turns_resume_off(server: Server) -> None:
    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        async with raw(server) as bob:
            welcome = await bob.auth("bob")
            assert "resumeToken" not in welcome
            assert "resumeWindowMs" not in welcome
            await bob.join("s")
            assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
            await bob.drop()
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")


async def test_a_dropped_client_resumes_with_its_seats_and_the_held_signals_in_order(
    server: Server, encoding: str
) -> None:
    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        async with raw(server, encoding) as bob:
            welcome = await bob.auth("bob")
            await bob.join("s")
            await bob.join("t")
            assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
            await bob.drop()
        await wait_away(server)
        # alice hears nothing, and her signals to bob are held, not refused
        await alice.send_offer("bob", "s", CALL["offer"])
        for n in range(5):
            await alice.send_candidate("bob", "s", candidate(n))
        assert await quiet(alice) == []
        async with raw(server, encoding) as bob:
            back = await bob.auth("bob", resume=welcome["resumeToken"])
            assert back["resumed"] is True
            assert sorted(back["sessions"]) == ["s", "t"]
            assert back["connectionId"] == welcome["connectionId"]
            assert back["resumeToken"] != welcome["resumeToken"]
            held = [await bob.receive() for _ in range(6)]
            assert [f["type"] for f in held] == ["offer"] + ["ice-candidate"] * 5
            assert held[0]["data"] == {"sdp": CALL["offer"]}
            assert [f["data"]["candidate"]["sdpMid"] for f in held[1:]] == [
                str(n) for n in range(5)
            ]
            assert all(f["from"] == "alice" for f in held)
            # then live traffic, both ways
            await alice.send_candidate("bob", "s", candidate(5))
            live = await bob.receive()
            assert live["data"]["candidate"]["sdpMid"] == "5"
            await bob.send(
                {"type": "answer", "to": "alice", "sessionId": "s", "data": {"sdp": CALL["answer"]}}
            )
            answer = await next_frame(alice)
            assert answer.from_ == "bob"
        # nobody heard user-left or user-joined for the drop and the resume; the
        # block's end closes with 1000, which leaves at once
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")
        assert await quiet(alice) == []


async def test_the_window_ends_with_user_left_exactly_once_and_a_late_resume_is_new(
    server: Server, encoding: str, autojump_clock: MockClock
) -> None:
    async with server.connect(user_id="alice", keepalive=None) as alice:
        await alice.join("s")
        async with raw(server, encoding) as bob:
            welcome = await bob.auth("bob")
            await bob.join("s")
            await next_frame(alice)
            await bob.drop()
        start = trio.current_time()
        await wait_away(server)
        with trio.fail_after(60):
            assert await alice.receive() == UserLeft(session_id="s", user_id="bob")
        assert 15.0 <= trio.current_time() - start <= 15.5
        assert await quiet(alice, 30) == []  # once
        async with raw(server, encoding) as bob:
            late = await bob.auth("bob", resume=welcome["resumeToken"])
            assert late["resumed"] is False
            assert "sessions" not in late
            # a new connection: it must join again, and is announced as new
            await bob.join("s")
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
    assert server.hub.stats.resume_expiries["window"] == 1
    assert server.hub.stats.resumes == {"refused": 1}


async def test_a_token_works_once(server: Server, encoding: str) -> None:
    async with raw(server, encoding) as bob:
        token = (await bob.auth("bob"))["resumeToken"]
        await bob.join("s")
        await bob.drop()
    await wait_away(server)
    async with raw(server, encoding) as bob:
        first = await bob.auth("bob", resume=token)
        assert first["resumed"] is True
        await bob.drop()
    await wait_away(server)
    async with raw(server, encoding) as bob:
        again = await bob.auth("bob", resume=token)  # the old token, not first's
        assert again["resumed"] is False
    # the token of the resumed connection still works
    async with raw(server, encoding) as bob:
        assert (await bob.auth("bob", resume=first["resumeToken"]))["resumed"] is True


@pytest.mark.parametrize("token", ["r_unknown", "x" * 128])
async def test_an_unknown_token_is_a_new_connection(
    server: Server, token: str, encoding: str
) -> None:
    async with raw(server, encoding) as bob:
        welcome = await bob.auth("bob", resume=token)
    assert welcome["resumed"] is False


async def test_a_token_over_128_characters_is_a_bad_frame(server: Server, encoding: str) -> None:
    async with raw(server, encoding) as bob:
        await bob.send({"type": "auth", "userId": "bob", "resume": "x" * 129})
        error = await bob.receive()
    assert (error["type"], error["code"]) == ("error", "bad-frame")


async def test_a_foreign_token_is_refused_and_stays_for_its_owner(
    server: Server, encoding: str
) -> None:
    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        token = await joined_then_dropped(server, alice, encoding)
        async with raw(server, encoding) as mallory:
            stolen = await mallory.auth("mallory", resume=token)
            assert stolen["resumed"] is False
        async with raw(server, encoding) as bob:
            assert (await bob.auth("bob", resume=token))["resumed"] is True
        # nothing for the drop or the resume; the block's close (1000) leaves
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")
        assert await quiet(alice) == []


async def test_a_client_that_closes_with_1000_leaves_at_once(server: Server, encoding: str) -> None:
    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        async with server.connect(user_id="bob") as bob:
            token = bob.welcome.resume_token if bob.welcome else None
            await bob.join("s")
            await next_frame(alice)
        # the SDK's exit closes with 1000
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")
        assert away_count(server) == 0
        async with raw(server, encoding) as again:
            assert isinstance(token, str)
            assert (await again.auth("bob", resume=token))["resumed"] is False


async def test_a_client_that_closes_with_another_code_goes_away(
    server: Server, encoding: str
) -> None:
    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        async with raw(server, encoding) as bob:
            token = (await bob.auth("bob"))["resumeToken"]
            await bob.join("s")
            await next_frame(alice)
            await bob.ws.aclose(4000, "switching networks")
        await wait_away(server)
        assert await quiet(alice) == []
        async with raw(server, encoding) as bob:
            assert (await bob.auth("bob", resume=token))["resumed"] is True


async def test_leaving_a_session_is_at_once_even_while_resume_is_on(server: Server) -> None:
    async with server.connect(user_id="alice") as alice, server.connect(user_id="bob") as bob:
        await alice.join("s")
        await bob.join("s")
        await next_frame(alice)
        await bob.leave("s")
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")


@pytest.mark.parametrize("settings", [RESUMING.replace(outbox_frames=8)])
async def test_a_hold_that_overflows_ends_the_window_early(server: Server, encoding: str) -> None:
    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        token = await joined_then_dropped(server, alice, encoding)
        for n in range(8):
            await alice.send_candidate("bob", "s", candidate(n))
        assert await quiet(alice) == []
        await alice.send_candidate("bob", "s", candidate(8))  # the ninth: over the hold
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")
        async with raw(server, encoding) as bob:
            assert (await bob.auth("bob", resume=token))["resumed"] is False
    assert server.hub.stats.resume_expiries["overflow"] == 1


@pytest.mark.parametrize("settings", [RESUMING.replace(ping_interval=1.0, ping_timeout=1.0)])
async def test_a_client_timed_out_by_the_heartbeat_can_resume(
    server: Server, autojump_clock: MockClock
) -> None:
    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        silent, token = await Silent.open(server, "bob", "s")
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        # bob never reads or answers a ping again: 4408 after 2 s, then away
        await trio.sleep(3)  # (the autojump clock: no wall time passes)
        await wait_away(server)
        async with raw(server) as bob:
            assert (await bob.auth("bob", resume=token))["resumed"] is True
        # nothing for the timeout or the resume; the block's close (1000) leaves
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")
        assert await quiet(alice) == []
        await silent.stream.aclose()
    assert server.hub.stats.closes[4408] == 1


async def test_a_resume_takes_over_a_connection_the_server_still_thinks_open(
    server: Server, encoding: str
) -> None:
    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        async with raw(server, encoding) as old:
            token = (await old.auth("bob"))["resumeToken"]
            await old.join("s")
            await next_frame(alice)
            # the client lost this one (half-open: the server saw nothing) and resumes
            async with raw(server, encoding) as bob:
                back = await bob.auth("bob", resume=token)
                assert back["resumed"] is True
                assert back["sessions"] == ["s"]
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await old.receive()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1000
                await alice.send_offer("bob", "s", CALL["offer"])
                assert (await bob.receive())["type"] == "offer"
        # nothing for the take-over; the block's close (1000) leaves
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")
        assert await quiet(alice) == []


async def test_a_new_connection_that_takes_the_seat_while_away_is_told_on_resume(
    server: Server, encoding: str
) -> None:
    async with raw(server, encoding) as bob:
        token = (await bob.auth("bob"))["resumeToken"]
        await bob.join("s")
        await bob.join("t")
        await bob.drop()
    await wait_away(server)
    async with server.connect(user_id="bob") as other_bob:
        await other_bob.join("s")  # takes the away seat in s
        async with raw(server, encoding) as bob:
            back = await bob.auth("bob", resume=token)
            assert back["resumed"] is True
            assert back["sessions"] == ["t"]
            replaced = await bob.receive()
            assert (replaced["type"], replaced["code"], replaced["sessionId"]) == (
                "error",
                "replaced",
                "s",
            )


@pytest.mark.parametrize("settings", [RESUMING.replace(token_secret=SECRET)])
async def test_with_verified_tokens_a_re_auth_gives_a_fresh_token_and_a_resume_needs_a_valid_one(
    server: Server,
) -> None:
    good = mint_join_token(SECRET, "bob", "*", ttl=600)
    async with raw(server) as bob:
        await bob.send({"type": "auth", "userId": "bob", "token": good})
        first = (await bob.receive())["resumeToken"]
        await bob.join("s")
        await bob.send({"type": "auth", "userId": "bob", "token": good})  # a re-auth
        second = (await bob.receive())["resumeToken"]
        assert second != first
        await bob.drop()
    await wait_away(server)
    async with raw(server) as bob:
        # the first token stopped working at the re-auth
        await bob.send({"type": "auth", "userId": "bob", "token": good, "resume": first})
        assert (await bob.receive())["resumed"] is False
    async with raw(server) as bob:
        # a resume is an auth like any other: an invalid token is refused (4401)
        await bob.send({"type": "auth", "userId": "bob", "token": "forged", "resume": second})
        assert (await bob.receive())["code"] == "unauthorized"
    async with raw(server) as bob:
        await bob.send({"type": "auth", "userId": "bob", "token": good, "resume": second})
        back = await bob.receive()
        assert back["resumed"] is True
        assert back["sessions"] == ["s"]


async def test_metrics_count_away_seats_resumes_and_held_signals(server: Server) -> None:
    import httpx

    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        token = await joined_then_dropped(server, alice)
        await alice.send_offer("bob", "s", CALL["offer"])
        await alice.join("s")  # a round trip: the offer was routed before it

        async def scrape() -> str:
            stream = await server.open_stream()
            request = b"GET /metrics HTTP/1.1\r\nHost: memory\r\nConnection: close\r\n\r\n"
            await stream.send_all(request)
            body = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some(65536):
                    body += chunk
            await stream.aclose()
            return body.decode()

        text = await scrape()
        assert "signaling_away_connections 1.0" in text
        assert "signaling_away_seats 1.0" in text
        assert "signaling_held_frames 1.0" in text
        async with raw(server) as bob:
            await bob.auth("bob", resume=token)
            await bob.receive()
            await bob.ws.aclose()
        text = await scrape()
        assert 'signaling_resumes_total{outcome="resumed"} 1.0' in text
        assert "signaling_away_connections 0.0" in text
        assert httpx  # the scrape is by hand: the server listens in memory


@pytest.mark.parametrize("settings", [RESUMING.replace(max_message_bytes=65536)])
async def test_what_a_taken_over_connection_had_not_written_goes_with_the_resume(
    server: Server,
) -> None:
    """bob stops reading; alice's offers fill his socket and then his outbox.
    He resumes on a new connection while the server still thinks the old one
    open: every offer reaches him exactly once, in order, split between what
    the old socket took and what the resume delivers."""
    async with server.connect(user_id="alice") as alice:
        await alice.join("s")
        silent, token = await Silent.open(server, "bob", "s")
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        (old,) = [c for c in server.hub.connections if c.user_id == "bob"]
        sdp = "v=0\r\n" + "a=x\r\n" * 5000  # about 30 KB per offer
        sent = 0
        with trio.fail_after(10):
            while len(old.outbox) < 3:  # the socket is full: offers wait in the outbox
                await alice.send_offer("bob", "s", {"type": "offer", "sdp": sdp}, extra={"n": sent})
                sent += 1
                await alice.join("s")  # a round trip: routed before the next
        queued = len(old.outbox)
        async with raw(server) as bob:
            back = await bob.auth("bob", resume=token)
            assert back["resumed"] is True
            held: list[int] = []
            with trio.move_on_after(0.5):
                while True:
                    held.append((await bob.receive())["data"]["n"])
            assert len(held) >= queued  # the old connection's unwritten offers came along
            # the old socket: what the server wrote to it before the take-over
            written = [frame["data"]["n"] for frame in await silent.read_until_closed()]
            assert written + held == list(range(sent))  # each once, in order
        await silent.stream.aclose()
