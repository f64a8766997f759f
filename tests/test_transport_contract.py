"""One contract, every transport: what `Connection` relies on of a `Transport`,
checked the same way for each (trio's ``check_two_way_stream`` idea).

Each transport is driven from its client's side in its own dialect (RFC 6455
frames for ``/ws``, Socket.IO packets over a WebSocket or over long-polling);
the contract is stated in protocol v1 frames. The ASGI transport is covered
through real hypercorn in ``test_asgi.py``: it has no client side to fake.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import pytest
import trio
import trio.testing
from wsproto.frame_protocol import FrameProtocol, Opcode

from signaling.server.transports.base import Transport
from signaling.server.transports.polling import PollingChannel
from signaling.server.transports.socketio import SocketIOTransport
from signaling.server.transports.ws import LeanTransport

from .test_exposure import masked

Frame = dict[str, Any]


class ClientEnd(Protocol):
    """The client's side of one transport."""

    @property
    def transport(self) -> Transport: ...

    closed: bool

    async def say(self, frame: Frame) -> None:
        """Send one v1 frame, in the transport's dialect."""

    async def hear(self) -> list[Frame]:
        """What reached the client so far, as v1 frames (waits for at least one)."""

    async def close(self) -> None:
        """Close from the client's side."""


class WebSocketEnd:
    """A client speaking RFC 6455 to a transport over an in-memory stream."""

    def __init__(self, transport: Transport, client: trio.abc.Stream) -> None:
        self.transport = transport
        self.stream = client
        self.frames = FrameProtocol(client=True, extensions=[])
        self.closed = False

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(masked(0x1, text.encode()))

    async def texts(self) -> list[str]:
        found: list[str] = []
        while not found:
            data = await self.stream.receive_some()
            if not data:
                return found
            self.frames.receive_bytes(bytes(data))
            for event in self.frames.received_frames():
                if event.opcode is Opcode.TEXT:
                    assert isinstance(event.payload, str)
                    found.append(event.payload)
                elif event.opcode is Opcode.CLOSE:
                    self.closed = True
                    return found
        return found


class LeanEnd(WebSocketEnd):
    async def say(self, frame: Frame) -> None:
        await self.send_text(json.dumps(frame))

    async def hear(self) -> list[Frame]:
        return [json.loads(text) for text in await self.texts()]

    async def close(self) -> None:
        await self.stream.send_all(masked(0x8, (1000).to_bytes(2, "big")))


def _socketio_event(frame: Frame) -> str:
    """A v1 frame as the old client's event (``join-session`` and friends)."""
    body = {k: v for k, v in frame.items() if k != "type"}
    return "42" + json.dumps([frame["type"], body])


def _socketio_frames(packets: list[str]) -> list[Frame]:
    frames = []
    for packet in packets:
        if packet.startswith("42"):
            name, body = json.loads(packet[2:])
            frames.append({**body, "type": name})
    return frames


class SocketIOOverWebSocketEnd(WebSocketEnd):
    async def say(self, frame: Frame) -> None:
        await self.send_text(_socketio_event(frame))

    async def hear(self) -> list[Frame]:
        return _socketio_frames(await self.texts())

    async def close(self) -> None:
        await self.send_text("41")  # a Socket.IO disconnect


class PollingEnd:
    """A client long-polling: POST bodies in, GET bodies out."""

    def __init__(self, transport: SocketIOTransport, channel: PollingChannel) -> None:
        self.transport = transport
        self.channel = channel
        self.closed = False

    async def say(self, frame: Frame) -> None:
        assert self.channel.post(_socketio_event(frame))
        await trio.lowlevel.checkpoint()

    async def hear(self) -> list[Frame]:
        body = await self.channel.poll(5)
        if body == "1":
            self.closed = True
            return []
        return _socketio_frames(body.split("\x1e"))

    async def close(self) -> None:
        assert self.channel.post("41")
        await trio.lowlevel.checkpoint()


def _lean(stream: Any) -> LeanTransport:
    return LeanTransport(stream, text=True, max_message=65536, pending=b"")


def _socketio(inner: LeanTransport | PollingChannel) -> SocketIOTransport:
    return SocketIOTransport(inner, ping_interval=25, ping_timeout=20, max_payload=65536)


def lean_end() -> ClientEnd:
    server, client = trio.testing.memory_stream_pair()
    return LeanEnd(_lean(server), client)


def socketio_websocket_end() -> ClientEnd:
    server, client = trio.testing.memory_stream_pair()
    return SocketIOOverWebSocketEnd(_socketio(_lean(server)), client)


def socketio_polling_end() -> ClientEnd:
    channel = PollingChannel("sid")
    return PollingEnd(_socketio(channel), channel)


ENDS: dict[str, Callable[[], ClientEnd]] = {
    "ws": lean_end,
    "socketio-websocket": socketio_websocket_end,
    "socketio-polling": socketio_polling_end,
}


@pytest.fixture(params=list(ENDS))
def end(request: pytest.FixtureRequest) -> Callable[[], ClientEnd]:
    return ENDS[request.param]


async def received(transport: Transport, count: int) -> list[Frame]:
    """The next ``count`` frames the transport hands the connection, decoded."""
    frames: list[Frame] = []
    with trio.fail_after(5):
        while len(frames) < count:
            batch = await transport.receive()
            assert batch is not None, "closed early"
            frames += [json.loads(payload) for _, payload in batch]
    return frames


@asynccontextmanager
async def opened(factory: Callable[[], ClientEnd]) -> AsyncIterator[ClientEnd]:
    end = factory()
    yield end
    with trio.move_on_after(1):
        await end.transport.aclose()


JOINS = [{"type": "join-session", "sessionId": f"s{n}"} for n in range(3)]


async def test_the_clients_frames_arrive_in_order(end: Callable[[], ClientEnd]) -> None:
    async with opened(end) as client:
        for frame in JOINS:
            await client.say(frame)
        got = await received(client.transport, 3)
    assert [(f["type"], f["sessionId"]) for f in got] == [
        ("join-session", f"s{n}") for n in range(3)
    ]


async def test_what_the_connection_sends_arrives_in_order(end: Callable[[], ClientEnd]) -> None:
    frames = [{"type": "user-joined", "sessionId": "s", "userId": f"u{n}"} for n in range(3)]
    async with opened(end) as client:
        await client.transport.send([json.dumps(f).encode() for f in frames], [])
        heard: list[Frame] = []
        with trio.fail_after(5):
            while len(heard) < 3:
                heard += await client.hear()
    assert heard == frames


async def test_the_clients_close_ends_receiving_with_its_code(
    end: Callable[[], ClientEnd],
) -> None:
    async with opened(end) as client:
        await client.say(JOINS[0])
        await client.close()
        with trio.fail_after(5):
            batches = []
            while (batch := await client.transport.receive()) is not None:
                batches.append(batch)
        assert client.transport.peer_close is not None
        assert client.transport.peer_close[0] == 1000


async def test_input_counts_as_activity(
    end: Callable[[], ClientEnd], autojump_clock: trio.testing.MockClock
) -> None:
    async with opened(end) as client:
        before = client.transport.last_activity
        await trio.sleep(10)
        await client.say(JOINS[0])
        await received(client.transport, 1)
        assert client.transport.last_activity >= before + 10


async def test_the_servers_close_reaches_the_client(end: Callable[[], ClientEnd]) -> None:
    async with opened(end) as client:
        await client.transport.send_close(1001, "going away")
        with trio.fail_after(5):
            while not client.closed:
                await client.hear()


async def test_ping_never_raises(end: Callable[[], ClientEnd]) -> None:
    async with opened(end) as client:
        client.transport.ping()
