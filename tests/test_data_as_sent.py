"""``data`` is relayed as sent, on every path (protocol/SPEC.md "Signals").

A hypothesis property: arbitrary JSON values inside ``data`` (unknown fields,
snake_case keys, deep nesting, any numbers the encodings share) reach the
receiver deep-equal, for every pair of sender and receiver among v1 JSON, v1
MessagePack and Socket.IO. The Socket.IO side here speaks the Engine.IO /
Socket.IO wire format over a WebSocket itself (one packet a message, exactly
what socket.io-client writes), so each example takes milliseconds; the real
socket.io-client runs the same flows in tests/test_socketio.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import msgspec
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.client import Client, connect
from signaling.codec import CLIENT_CODECS
from signaling.errors import BadFrame
from signaling.frames import (
    DATA_MAX_DEPTH,
    Answer,
    Error,
    IceCandidate,
    Offer,
    RelayedAnswer,
    RelayedIceCandidate,
    RelayedOffer,
)

from .conftest import TEST_SETTINGS, chromium_call, server_in_thread

CALL = chromium_call()
SESSION = "as-sent"
KINDS = {"offer": RelayedOffer, "answer": RelayedAnswer, "ice-candidate": RelayedIceCandidate}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)
extra_keys = st.sampled_from(["callId", "seq", "sdp_mid", "sdp_m_line_index", "x", ""]) | st.text(
    max_size=12
)


def _extras(known: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(extra_keys.filter(lambda k: k not in known), json_values, max_size=4)


@st.composite
def signal_data(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(type, data): the known fields valid, anything else beside them and inside them."""
    kind = draw(st.sampled_from(sorted(KINDS)))
    if kind == "ice-candidate":
        candidate: dict[str, Any] | None = None
        if draw(st.booleans()):
            candidate = {
                **draw(st.sampled_from([c for c in CALL["offerCandidates"] if c is not None])),
                **draw(_extras({"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"})),
            }
        return kind, {"candidate": candidate, **draw(_extras({"candidate"}))}
    description = {**CALL[kind if kind == "answer" else "offer"], **draw(_extras({"type", "sdp"}))}
    return kind, {"sdp": description, **draw(_extras({"sdp"}))}


# --- a Socket.IO client on the wire ---------------------------------------------------


class WireSocketIO:
    """Engine.IO v4 / Socket.IO v5 over a WebSocket: what socket.io-client sends."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, nursery: trio.Nursery, port: int, user_id: str) -> WireSocketIO:
        ws = await trio_websocket.connect_websocket_url(
            nursery, f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        )
        client = cls(ws)
        assert str(await ws.get_message()).startswith("0{")
        await ws.send_message("40" + json.dumps({"userId": user_id, "sessionId": SESSION}))
        assert (await client.next_packet()).startswith("40")
        return client

    async def next_packet(self) -> str:
        while True:
            packet = await self.ws.get_message()
            assert isinstance(packet, str)
            if packet == "2":
                await self.ws.send_message("3")
                continue
            return packet

    async def emit(self, event: str, payload: Any) -> None:
        await self.ws.send_message("42" + json.dumps([event, payload]))

    async def next_event(self, *names: str) -> tuple[str, Any]:
        while True:
            packet = await self.next_packet()
            if packet.startswith("42"):
                name, payload = json.loads(packet[2:])
                if name in names:
                    return name, payload


# --- the paths -------------------------------------------------------------------------

Endpoint = Literal["json", "msgpack", "sio"]
ENDPOINTS: list[Endpoint] = ["json", "msgpack", "sio"]


@pytest.fixture(scope="module")
def live_server() -> Iterator[int]:
    """One server for every example."""
    with server_in_thread(TEST_SETTINGS) as (port, _):
        yield port


async def _send(sender: Client | WireSocketIO, to: str, kind: str, data: dict[str, Any]) -> None:
    if isinstance(sender, WireSocketIO):
        payload = {"type": kind, "from": "forged", "to": to, "sessionId": SESSION, "data": data}
        await sender.emit(f"signal:{kind}", payload)
        return
    if kind == "offer":
        await sender.send(Offer(to=to, session_id=SESSION, data=data))
    elif kind == "answer":
        await sender.send(Answer(to=to, session_id=SESSION, data=data))
    else:
        await sender.send(IceCandidate(to=to, session_id=SESSION, data=data))


async def _receive(receiver: Client | WireSocketIO, kind: str) -> tuple[str, dict[str, Any]]:
    """(from, data) of the next relayed ``kind``."""
    if isinstance(receiver, WireSocketIO):
        _, payload = await receiver.next_event(f"signal:{kind}")
        assert set(payload) == {"type", "from", "to", "sessionId", "data"}
        assert payload["type"] == kind
        return payload["from"], payload["data"]
    while True:
        frame = await receiver.receive()
        assert not isinstance(frame, Error), frame
        if isinstance(frame, KINDS[kind]):
            return frame.from_, frame.data  # type: ignore[union-attr]


async def relay_on_every_path(port: int, kind: str, data: dict[str, Any]) -> None:
    """``kind`` with ``data`` from each kind of client to each kind (itself: a second user)."""
    url = f"ws://127.0.0.1:{port}/ws"
    async with (
        trio.open_nursery() as nursery,
        connect(url, user_id="json") as json_a,
        connect(url, user_id="json-peer") as json_b,
        connect(url, user_id="msgpack", encoding="msgpack") as msgpack_a,
        connect(url, user_id="msgpack-peer", encoding="msgpack") as msgpack_b,
    ):
        for client in (json_a, json_b, msgpack_a, msgpack_b):
            await client.join(SESSION)
        clients: dict[str, Client | WireSocketIO] = {
            "json": json_a,
            "json-peer": json_b,
            "msgpack": msgpack_a,
            "msgpack-peer": msgpack_b,
            "sio": await WireSocketIO.open(nursery, port, "sio"),
            "sio-peer": await WireSocketIO.open(nursery, port, "sio-peer"),
        }
        with trio.fail_after(10):
            for sender in ENDPOINTS:
                for receiver in ENDPOINTS:
                    to = receiver if receiver != sender else f"{receiver}-peer"
                    await _send(clients[sender], to, kind, data)
                    got_from, got_data = await _receive(clients[to], kind)
                    assert (got_from, got_data) == (sender, data), (sender, to)
        for endpoint in clients.values():
            if isinstance(endpoint, WireSocketIO):
                await endpoint.ws.aclose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=signal_data())
def test_data_reaches_the_receiver_unchanged_on_every_path(
    live_server: int, example: tuple[str, dict[str, Any]]
) -> None:
    kind, data = example
    trio.run(relay_on_every_path, live_server, kind, data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"sdp": {"type": "offer", "sdp": "v=0"}, "blob": b"\x00"}, "bytes values"),
        ({"sdp": {"type": "offer", "sdp": "v=0"}, "n": 2**64}, "integer out of 64-bit range"),
        ({"sdp": {"type": "offer", "sdp": "v=0"}, "x": float("inf")}, "numbers must be finite"),
        ({"sdp": {"type": "offer", "sdp": "v=0"}, "k": {1: 2}}, "object keys must be strings"),
        ({"sdp": "v=0"}, "Expected `object`, got `str` - at `$.data.sdp`"),
        ({"candidate": "x"}, "Expected `object | null`"),
    ],
)
def test_data_that_cannot_travel_unchanged_is_a_bad_frame(data: Any, reason: str) -> None:
    frame = {"type": "offer" if "sdp" in data else "ice-candidate", "to": "b", "sessionId": "s"}
    frame["data"] = data
    if reason.startswith("integer"):  # MessagePack has no such integers: JSON does
        subprotocol, wire = "signaling.v1.json", json.dumps(frame).encode()
    else:
        subprotocol, wire = "signaling.v1.msgpack", msgspec.msgpack.encode(frame)
    with pytest.raises(BadFrame) as caught:
        CLIENT_CODECS[subprotocol].decode(wire)
    assert reason in caught.value.message


def test_data_nested_deeper_than_the_limit_is_a_bad_frame() -> None:
    deep: Any = "leaf"
    for _ in range(DATA_MAX_DEPTH):
        deep = [deep]
    wire = json.dumps(
        {
            "type": "ice-candidate",
            "to": "b",
            "sessionId": "s",
            "data": {"candidate": None, "d": deep},
        }
    )
    with pytest.raises(BadFrame) as caught:
        CLIENT_CODECS["signaling.v1.json"].decode(wire.encode())
    assert f"nested deeper than {DATA_MAX_DEPTH} levels" in caught.value.message
