"""The lean WebSocket codec agrees with wsproto, frame for frame."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from signaling.server.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameParser,
    ProtocolError,
    accept_key,
    close_frame,
    encode_frames,
    parse_close,
)

LIMIT = 70_000

messages = st.lists(
    st.tuples(
        st.booleans(),
        st.binary(max_size=LIMIT) | st.binary(min_size=120, max_size=300),
        st.integers(min_value=1, max_value=4),
        st.booleans(),
    ),
    max_size=6,
)


def _client_bytes(
    items: list[tuple[bool, bytes, int, bool]],
) -> tuple[bytes, list[tuple[int, bytes | str]]]:
    """Masked client frames from wsproto, and the events our parser must yield."""
    client = FrameProtocol(client=True, extensions=[])
    wire = bytearray()
    expected: list[tuple[int, bytes | str]] = []
    for text, payload, pieces, ping_inside in items:
        body: bytes | str = payload.decode("latin-1") if text else payload
        # wsproto fragments only through send_data(fin=False); split the payload
        step = max(1, len(body) // pieces)
        chunks = [body[i : i + step] for i in range(0, len(body), step)] or [body]
        message: bytes | str = payload.decode("latin-1") if text else payload
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            wire += client.send_data(chunk, fin=last)
            if last:
                expected.append((OP_TEXT if text else OP_BINARY, message))
            if ping_inside and n == 0:
                wire += client.ping(b"hi")
                expected.append((OP_PING, b"hi"))
    return bytes(wire), expected


@settings(max_examples=150, deadline=None)
@given(items=messages, cuts=st.lists(st.integers(min_value=0, max_value=400_000), max_size=8))
def test_parser_reads_what_wsproto_writes_at_any_split(
    items: list[tuple[bool, bytes, int, bool]], cuts: list[int]
) -> None:
    wire, expected = _client_bytes(items)
    parser = FrameParser(max_message=4 * LIMIT)
    got: list[tuple[int, bytes | str]] = []
    start = 0
    for cut in [*sorted({c % (len(wire) + 1) for c in cuts}), len(wire)]:
        got.extend(parser.feed(wire[start:cut]))
        start = cut
    assert got == expected


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 100_000])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_wsproto_reads_what_we_write(size: int, opcode: int) -> None:
    payloads = [bytes(65 + i % 26 for i in range(size)), b"second"]
    wire = b"".join(encode_frames(opcode, payloads)) + close_frame(1001, "bye")
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(wire)
    frames = list(client.received_frames())
    assert [f.opcode for f in frames] == [Opcode(opcode), Opcode(opcode), Opcode.CLOSE]
    received = [f.payload.encode() if isinstance(f.payload, str) else f.payload for f in frames[:2]]
    assert received == payloads
    assert frames[2].payload == (1001, "bye")


def test_close_reason_is_cut_to_the_control_frame_limit_on_a_character_boundary() -> None:
    frame = close_frame(4401, "é" * 100)
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(frame)
    [received] = list(client.received_frames())
    assert isinstance(received.payload, tuple)
    code, reason = received.payload
    assert code == 4401
    assert 0 < len(reason.encode()) <= 123


def test_accept_key_matches_rfc_6455_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def _masked(first: int, payload: bytes, *, mask: bool = True, length: bytes | None = None) -> bytes:
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    if length is None:
        if len(payload) < 126:
            length = bytes([len(payload)])
        elif len(payload) < 65536:
            length = bytes([126]) + struct.pack("!H", len(payload))
        else:
            length = bytes([127]) + struct.pack("!Q", len(payload))
    if mask:
        return bytes([first]) + bytes([length[0] | 0x80]) + length[1:] + key + masked
    return bytes([first]) + length + payload


BROKEN = {
    "unmasked": (_masked(0x81, b"hi", mask=False), 1002),
    "reserved bit": (_masked(0x81 | 0x40, b"hi"), 1002),
    "unknown opcode": (_masked(0x83, b"hi"), 1002),
    "long ping": (_masked(0x89, b"x" * 126), 1002),
    "fragmented ping": (_masked(0x09, b"x"), 1002),
    "continuation first": (_masked(0x80, b"x"), 1002),
    "text inside fragments": (_masked(0x01, b"a") + _masked(0x81, b"b"), 1002),
    "one byte close": (_masked(0x88, b"\x03"), 1002),
    "close code 1005": (_masked(0x88, struct.pack("!H", 1005)), 1002),
    "close code 999": (_masked(0x88, struct.pack("!H", 999)), 1002),
    "close reason not utf-8": (_masked(0x88, struct.pack("!H", 1000) + b"\xff"), 1007),
    "length not minimal": (
        _masked(0x81, b"x" * 10, length=bytes([126]) + struct.pack("!H", 10)),
        1002,
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_protocol_errors_close_with_the_same_code_as_wsproto(name: str) -> None:
    wire, code = BROKEN[name]
    with pytest.raises(ProtocolError) as ours:
        FrameParser(max_message=LIMIT).feed(wire)
    server = FrameProtocol(client=False, extensions=[])
    server.receive_bytes(wire)
    with pytest.raises(ParseFailed) as theirs:
        list(server.received_frames())
    assert ours.value.code == code == theirs.value.code


def test_oversized_message_is_refused_from_its_header_alone() -> None:
    header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 10_000_000) + b"\x00\x00\x00\x00"
    with pytest.raises(ProtocolError) as caught:
        FrameParser(max_message=65536).feed(header)
    assert caught.value.code == 1009


def test_oversized_fragmented_message_is_refused_before_the_last_fragment() -> None:
    parser = FrameParser(max_message=100)
    assert parser.feed(_masked(0x02, b"x" * 60)) == []
    with pytest.raises(ProtocolError) as caught:
        parser.feed(_masked(0x00, b"x" * 60)[:8])
    assert caught.value.code == 1009


def test_close_frame_payload_parses() -> None:
    [(opcode, payload)] = FrameParser(max_message=10).feed(
        _masked(0x88, struct.pack("!H", 4000) + b"bye")
    )
    assert opcode == OP_CLOSE
    assert isinstance(payload, bytes)
    assert parse_close(payload) == (4000, "bye")
    assert parse_close(b"") == (1005, "")
