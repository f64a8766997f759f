"""The /ws transport's reactor (`signaling.server.transports.ws`): frames of an
authenticated connection are applied as they arrive, without waking its task,
and every way out of that mode behaves as the task-per-read path did."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
import trio
from wsproto.frame_protocol import FrameProtocol, Opcode

from signaling.core import peer as peer_module
from signaling.server.transports.ws import LeanTransport, Reactor

from .conftest import Server, chromium_call

CANDIDATE = chromium_call()["offerCandidates"][0]
KEY = base64.b64encode(b"0123456789abcdef").decode()


def masked(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked with a zero key."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    return header + b"\0\0\0\0" + payload


def text(frame: dict[str, Any]) -> bytes:
    return masked(0x1, json.dumps(frame).encode())


class RawClient:
    """A WebSocket client that writes whatever bytes a test gives it, in one write."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.protocol = FrameProtocol(client=True, extensions=[])
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None

    @classmethod
    async def open(cls, server: Server, user: str, session: str = "s") -> RawClient:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(
            (
                "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: signaling.v1.json\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        client = cls(stream)
        client.protocol.receive_bytes(head.split(b"\r\n\r\n", 1)[1])
        await client.send(
            text({"type": "auth", "userId": user}),
            text({"type": "join-session", "sessionId": session, "id": "j"}),
        )
        await client.until(lambda f: f.get("replyTo") == "j")
        return client

    async def send(self, *frames: bytes) -> None:
        await self.stream.send_all(b"".join(frames))

    async def until(self, done: Any) -> dict[str, Any]:
        """Read until a frame matches ``done`` (raises at the server's close)."""
        with trio.fail_after(5):
            while True:
                for frame in self.protocol.received_frames():
                    payload: Any = frame.payload  # (code, reason) for a close, else str
                    if frame.opcode is Opcode.CLOSE:
                        self.close_code = payload[0]
                        raise ConnectionError(f"closed {self.close_code}")
                    decoded: dict[str, Any] = json.loads(payload)
                    self.frames.append(decoded)
                    if done(decoded):
                        return decoded
                data = await self.stream.receive_some(65536)
                if not data:
                    raise ConnectionError("EOF")
                self.protocol.receive_bytes(data)

    async def closed(self) -> int:
        with pytest.raises(ConnectionError):
            await self.until(lambda _: False)
        assert self.close_code is not None
        return self.close_code


def candidate(to: str, session: str = "s", n: int = 0) -> bytes:
    data = {"candidate": CANDIDATE, "n": n}
    return text({"type": "ice-candidate", "to": to, "sessionId": session, "data": data})


def transports(server: Server) -> list[LeanTransport]:
    return [c.transport for c in server.hub.connections]  # type: ignore[misc]


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def connections_left(server: Server, n: int) -> None:
    """Wait until the server has finished its side of every other connection."""
    with trio.fail_after(5):
        while len(server.hub.connections) > n:
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)


async def test_signals_are_applied_while_the_reader_task_stays_parked(server: Server) -> None:
    alice = await RawClient.open(server, "alice")
    bob = await RawClient.open(server, "bob")
    await settle()
    parked = [t._parked for t in transports(server)]
    assert all(task is not None for task in parked)
    assert len(Reactor.current()) == 2
    for n in range(20):
        await alice.send(candidate("bob", n=n))
        got = await bob.until(lambda f: f["type"] == "ice-candidate")
        assert got["data"] == {"candidate": CANDIDATE, "n": n}
        assert got["from"] == "alice"
    await settle()
    # the same tasks, never woken: the reactor applied all twenty
    assert [t._parked for t in transports(server)] == parked


async def test_a_join_among_signals_wakes_the_task_and_keeps_the_order(server: Server) -> None:
    alice = await RawClient.open(server, "alice")
    bob = await RawClient.open(server, "bob")
    carol = await RawClient.open(server, "carol", session="t")
    await settle()
    # one write: a signal, a join (needs an await), a signal into the new session
    await alice.send(
        candidate("bob", n=1),
        text({"type": "join-session", "sessionId": "t", "id": "j2"}),
        candidate("carol", session="t", n=2),
        candidate("bob", n=3),
    )
    first = await bob.until(lambda f: f["type"] == "ice-candidate")
    joined = await alice.until(lambda f: f.get("replyTo") == "j2")
    to_carol = await carol.until(lambda f: f["type"] == "ice-candidate")
    second = await bob.until(lambda f: f["type"] == "ice-candidate")
    assert [f["data"]["n"] for f in (first, to_carol, second)] == [1, 2, 3]
    assert joined["participants"] == ["carol"]
    await settle()
    assert all(t._parked is not None for t in transports(server))  # back in the reactor


async def test_a_protocol_error_in_inline_mode_closes_only_that_connection(server: Server) -> None:
    alice = await RawClient.open(server, "alice")
    bob = await RawClient.open(server, "bob")
    mallory = await RawClient.open(server, "mallory")
    await settle()
    await mallory.send(b"\x81\x05hello")  # unmasked: RFC 6455 says close 1002
    assert await mallory.closed() == 1002
    await alice.send(candidate("bob", n=7))
    assert (await bob.until(lambda f: f["type"] == "ice-candidate"))["data"]["n"] == 7
    # it waits (bounded) for mallory's side of the close handshake; EOF ends it
    await mallory.stream.aclose()
    await connections_left(server, 2)
    await settle()
    assert len(Reactor.current()) == 2


async def test_a_bug_while_applying_a_frame_closes_1011_and_spares_the_rest(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, frame: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(peer_module.Peer, "_connection_state", broken)
    alice = await RawClient.open(server, "alice")
    bob = await RawClient.open(server, "bob")
    mallory = await RawClient.open(server, "mallory")
    await settle()
    await mallory.send(text({"type": "connection-state", "sessionId": "s", "state": "new"}))
    assert await mallory.closed() == 1011
    await alice.send(candidate("bob", n=8))
    assert (await bob.until(lambda f: f["type"] == "ice-candidate"))["data"]["n"] == 8


async def test_closed_connections_leave_the_reactor(server: Server) -> None:
    clients = [await RawClient.open(server, f"u{n}") for n in range(5)]
    await settle()
    assert len(Reactor.current()) == 5
    await clients[0].send(masked(0x8, struct.pack("!H", 1000)))  # a clean close
    assert await clients[0].closed() == 1000
    await clients[1].stream.aclose()  # EOF
    await clients[2].send(candidate("u3"), masked(0x8, struct.pack("!H", 1000)))
    assert await clients[2].closed() == 1000
    await clients[3].until(lambda f: f["type"] == "ice-candidate")  # sent before the close
    await connections_left(server, 2)
    await settle()
    assert len(Reactor.current()) == 2


async def test_the_heartbeat_still_sees_inline_reads(server: Server) -> None:
    alice = await RawClient.open(server, "alice")
    await RawClient.open(server, "bob")
    await settle()
    transport = next(t for t in transports(server) if t._parked is not None)
    before = {id(t): t.last_activity for t in transports(server)}
    await trio.sleep(0.05)
    await alice.send(candidate("bob"))
    await settle()
    after = {id(t): t.last_activity for t in transports(server)}
    assert sum(after[k] > before[k] for k in before) == 1
    assert transport._parked is not None


async def test_after_round_hooks_run_after_the_frames_of_a_round(server: Server) -> None:
    alice = await RawClient.open(server, "alice")
    bob = await RawClient.open(server, "bob")
    await settle()
    seen: list[tuple[float, int]] = []
    delivered = server.hub.stats.frames_out

    def hook(now: float) -> None:
        seen.append((now, delivered["ice-candidate"]))

    reactor = Reactor.current()
    reactor.after_round.append(hook)
    try:
        before = trio.current_time()
        await alice.send(candidate("bob", n=1))
        await bob.until(lambda f: f["type"] == "ice-candidate")
        await settle()
    finally:
        reactor.after_round.remove(hook)
    # called once the round had relayed the frame, with the time
    assert seen
    assert seen[0][0] >= before
    assert seen[0][1] == 1
