"""permessage-deflate: off unless configured, then bounded and stateless."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from signaling.client import connect
from signaling.frames import RelayedOffer
from signaling.server.websocket import Deflate, FrameParser, ProtocolError

from .conftest import TEST_SETTINGS, Server, chromium_call

CALL = chromium_call()
DEFLATE_ON = TEST_SETTINGS.replace(permessage_deflate=True, max_message_bytes=65536)


class DeflateClient:
    """A browser-like client: offers permessage-deflate through wsproto."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.raw: list[bytes] = []

    @classmethod
    async def open(cls, server: Server) -> tuple[DeflateClient, AcceptConnection]:
        client = cls(await trio.open_tcp_stream("127.0.0.1", server.port))
        await client.send(Request(host="x", target="/ws", extensions=[PerMessageDeflate()]))
        accepted = (await client.events())[0]
        assert isinstance(accepted, AcceptConnection)
        return client, accepted

    async def send(self, event: Any) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def events(self) -> list[Any]:
        data = await self.stream.receive_some(65536)
        self.raw.append(data)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    async def text(self) -> dict[str, Any]:
        with trio.fail_after(5):
            while True:
                for event in await self.events():
                    if isinstance(event, TextMessage):
                        result: dict[str, Any] = json.loads(event.data)
                        return result


async def test_deflate_is_not_negotiated_by_default(server: Server) -> None:
    _, accepted = await DeflateClient.open(server)
    assert accepted.extensions == []


@pytest.mark.parametrize("settings", [DEFLATE_ON])
async def test_deflate_when_configured_carries_a_call(server: Server) -> None:
    client, accepted = await DeflateClient.open(server)
    assert [type(e) for e in accepted.extensions] == [PerMessageDeflate]
    async with connect(server.url, user_id="bob") as bob:
        await client.send(TextMessage(json.dumps({"type": "auth", "userId": "alice"})))
        assert (await client.text())["type"] == "welcome"
        await client.send(TextMessage(json.dumps({"type": "join-session", "sessionId": "s"})))
        assert (await client.text())["type"] == "session-joined"
        await bob.join("s")
        offer = {"type": "offer", "to": "bob", "sessionId": "s", "data": {"sdp": CALL["offer"]}}
        await client.send(TextMessage(json.dumps(offer)))  # compressed by wsproto
        with trio.fail_after(5):
            while not isinstance(frame := await bob.receive(), RelayedOffer):
                pass
        assert frame.data["sdp"]["sdp"] == CALL["offer"]["sdp"]
        await bob.send_answer("alice", "s", CALL["answer"])
        before = sum(len(r) for r in client.raw)
        while (await client.text())["type"] != "answer":
            pass
        answer_bytes = sum(len(r) for r in client.raw) - before
        # the 5.1 KB answer arrived compressed
        assert answer_bytes < len(CALL["answer"]["sdp"]) * 0.8


def _masked_compressed(payload: bytes) -> bytes:
    body = Deflate(15, "").compress(payload)
    key = b"\x00\x00\x00\x00"
    n = len(body)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return bytes([0xC1]) + length + key + body


@pytest.mark.parametrize("settings", [DEFLATE_ON])
async def test_compression_bomb_closes_1009(server: Server) -> None:
    client, _ = await DeflateClient.open(server)
    await client.send(TextMessage(json.dumps({"type": "auth", "userId": "alice"})))
    assert (await client.text())["type"] == "welcome"
    bomb = b'{"type": "join-session", "sessionId": "' + b"x" * 2_000_000 + b'"}'
    wire = _masked_compressed(bomb)
    assert len(wire) < 10_000
    await client.stream.send_all(wire)
    with trio.fail_after(5):
        while True:
            closes = [e for e in await client.events() if isinstance(e, CloseConnection)]
            if closes:
                break
    assert closes[0].code == 1009


def test_parser_inflates_compressed_messages_and_caps_them() -> None:
    parser = FrameParser(max_message=100, deflate=True)
    assert parser.feed(_masked_compressed(b"hello " * 10)) == [(0x1, "hello " * 10)]
    with pytest.raises(ProtocolError) as caught:
        parser.feed(_masked_compressed(b"a" * 101))
    assert caught.value.code == 1009
    with pytest.raises(ProtocolError) as caught:
        FrameParser(max_message=100).feed(_masked_compressed(b"hi"))
    assert caught.value.code == 1002


@pytest.mark.parametrize(
    ("offer", "response"),
    [
        (
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=10",
        ),
        (
            "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        ("permessage-deflate; server_max_window_bits=8", None),
        ("permessage-deflate; mystery=1", None),
        ("x-webkit-deflate-frame", None),
    ],
)
def test_negotiation(offer: str, response: str | None) -> None:
    deflate = Deflate.negotiate([offer])
    assert (deflate.response if deflate else None) == response


def test_compressed_messages_are_standalone() -> None:
    deflate = Deflate(15, "")
    message = b"v=0\r\n" * 200
    first = deflate.compress(message)
    second = deflate.compress(message)
    assert first == second  # no context carried from one message to the next
    assert zlib.decompressobj(-15).decompress(first + b"\x00\x00\xff\xff") == message
