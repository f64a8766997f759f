"""A lean, sans-IO WebSocket (RFC 6455) server codec for ``/ws``.

Why not wsproto on the hot path: wsproto builds an event object per frame
and a bytes object per send; this module parses every complete frame of a
read in one loop and frames a whole batch of outgoing messages into one
buffer. It implements exactly what a server needs: masked client frames,
fragmentation, ping/pong, the close handshake, a message-size limit checked
from the frame header (the payload is never buffered past the limit), and
no extensions (permessage-deflate is never negotiated). Tests check it
against wsproto frame for frame.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from typing import Final

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Deflate",
    "FrameParser",
    "ProtocolError",
    "accept_key",
    "close_frame",
    "encode_frames",
    "frame",
    "switching_protocols",
]

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DATA_OPCODES: Final = frozenset((OP_TEXT, OP_BINARY))
_CONTROL_OPCODES: Final = frozenset((OP_CLOSE, OP_PING, OP_PONG))
# RFC 6455 section 7.4: codes a peer may send in a close frame.
_NEVER_SENT_CODES: Final = frozenset((1004, 1005, 1006, 1015))


class ProtocolError(Exception):
    """The client broke RFC 6455; close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    digest = hashlib.sha1(key.encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def switching_protocols(key: str, headers: str = "") -> bytes:
    """The ``101`` that accepts an opening handshake with ``Sec-WebSocket-Key`` ``key``
    (``headers``: further header lines, each ending in CRLF)."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n{headers}\r\n"
    ).encode("latin-1")


MAX_FRAGMENTS = 1024
"""Most frames one message may come in (browsers send one); more closes with 1009."""


class FrameParser:
    """Turns bytes from a client into complete messages and control frames.

    `feed` returns a list of ``(opcode, payload)``: ``OP_TEXT`` with a whole
    (defragmented) message as ``str`` (the whole message is checked to be
    UTF-8, RFC 6455 §8.1, or the connection closes with 1007), ``OP_BINARY``
    with its bytes, ``OP_PING``/``OP_PONG`` with their payload, ``OP_CLOSE``
    with the raw close payload. It raises `ProtocolError` for anything RFC
    6455 forbids, for a message over ``max_message`` bytes (1009, decided
    from the headers, before buffering) and for one split into more than
    `MAX_FRAGMENTS` frames (1009: endless empty continuations would cost
    time and memory without ever passing the size limit). Fragments gather
    in one buffer, so a message costs its size however it was split.
    """

    __slots__ = (
        "_buffer",
        "_compressed",
        "_fragments",
        "_fragments_count",
        "_fragments_opcode",
        "_fragments_size",
        "deflate",
        "max_message",
    )

    def __init__(self, max_message: int, *, deflate: bool = False) -> None:
        self.max_message = max_message
        self.deflate = deflate
        """permessage-deflate was negotiated: RSV1 marks a compressed message."""
        self._buffer = b""
        self._fragments = bytearray()
        self._fragments_opcode = 0
        self._fragments_size = 0
        self._fragments_count = 0
        self._compressed = False

    def feed(self, data: bytes | bytearray) -> list[tuple[int, bytes | str]]:
        """Parse ``data`` (appended to any partial frame left from before)."""
        if type(data) is not bytes:
            data = bytes(data)
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        out: list[tuple[int, bytes | str]] = []
        pos = 0
        end = len(data)
        while end - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            compressed = False
            if b0 & 0x70:
                if b0 & 0x70 != 0x40 or not self.deflate:
                    raise ProtocolError(1002, "reserved bits set without a negotiated extension")
                if opcode not in _DATA_OPCODES:
                    raise ProtocolError(1002, "RSV1 is only valid on a message's first frame")
                compressed = True
            if not b1 & 0x80:
                raise ProtocolError(1002, "client frames must be masked")
            length = b1 & 0x7F
            header = 6
            if length == 126:
                if end - pos < 8:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                if length < 126:
                    raise ProtocolError(1002, "payload length not minimally encoded")
                header = 8
            elif length == 127:
                if end - pos < 14:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if length >> 63:
                    raise ProtocolError(1002, "payload length has its high bit set")
                if length < 65536:
                    raise ProtocolError(1002, "payload length not minimally encoded")
                header = 14
            if opcode in _CONTROL_OPCODES:
                if length > 125:
                    raise ProtocolError(1002, "control frame payload over 125 bytes")
                if not fin:
                    raise ProtocolError(1002, "fragmented control frame")
            elif opcode in _DATA_OPCODES:
                if self._fragments_opcode:
                    raise ProtocolError(1002, "new message before the fragmented one ended")
                if length > self.max_message:
                    raise ProtocolError(1009, f"message over {self.max_message} bytes")
            elif opcode == OP_CONTINUATION:
                if not self._fragments_opcode:
                    raise ProtocolError(1002, "continuation frame without a message to continue")
                if self._fragments_size + length > self.max_message:
                    raise ProtocolError(1009, f"message over {self.max_message} bytes")
                if self._fragments_count >= MAX_FRAGMENTS:
                    raise ProtocolError(1009, f"message in over {MAX_FRAGMENTS} fragments")
            else:
                raise ProtocolError(1002, f"unknown opcode {opcode:#x}")
            stop = pos + header + length
            if stop > end:
                break
            # unmasking (RFC 6455 5.3) as one XOR of two integers, which in CPython
            # is far faster than a loop over the bytes; here, not in a function:
            # it runs for every frame
            if length:
                mask = data[pos + header - 4 : pos + header]
                key = int.from_bytes((mask * ((length >> 2) + 1))[:length], "little")
                payload = (int.from_bytes(data[pos + header : stop], "little") ^ key).to_bytes(
                    length, "little"
                )
            else:
                payload = b""
            pos = stop
            if opcode in _DATA_OPCODES:
                if fin:
                    message = self._inflate(payload) if compressed else payload
                    out.append((opcode, _text(message) if opcode == OP_TEXT else message))
                else:
                    self._fragments_opcode = opcode
                    self._fragments = bytearray(payload)
                    self._fragments_size = length
                    self._fragments_count = 1
                    self._compressed = compressed
            elif opcode == OP_CONTINUATION:
                self._fragments += payload
                self._fragments_size += length
                self._fragments_count += 1
                if fin:
                    message = bytes(self._fragments)
                    if self._compressed:
                        message = self._inflate(message)
                    kind = self._fragments_opcode
                    out.append((kind, _text(message) if kind == OP_TEXT else message))
                    self._fragments_opcode = 0
                    self._fragments = bytearray()
                    self._fragments_size = 0
                    self._fragments_count = 0
                    self._compressed = False
            else:
                if opcode == OP_CLOSE:
                    _check_close_payload(payload)
                out.append((opcode, payload))
        if pos < end:
            self._buffer = data[pos:]
        return out

    def _inflate(self, payload: bytes) -> bytes:
        """RFC 7692 decompression, each message on its own (no context takeover).

        The output is capped at ``max_message`` bytes: a small message that
        inflates beyond it (a compression bomb) closes with 1009.
        """
        inflater = zlib.decompressobj(-15)
        try:
            message = inflater.decompress(payload + b"\x00\x00\xff\xff", self.max_message + 1)
        except zlib.error as exc:
            raise ProtocolError(1007, f"invalid compressed data: {exc}") from None
        if len(message) > self.max_message or inflater.unconsumed_tail:
            raise ProtocolError(1009, f"message inflates to over {self.max_message} bytes")
        return message


def _text(message: bytes) -> str:
    """A text message's content; the whole of it must be UTF-8 (RFC 6455 §8.1)."""
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(1007, "text message is not valid UTF-8") from None


def _check_close_payload(payload: bytes) -> None:
    if not payload:
        return
    if len(payload) == 1:
        raise ProtocolError(1002, "close frame payload of one byte")
    code = (payload[0] << 8) | payload[1]
    if code < 1000 or code >= 5000 or code in _NEVER_SENT_CODES or 1016 <= code < 3000:
        raise ProtocolError(1002, f"invalid close code {code}")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(1007, "close reason is not valid UTF-8") from None


def parse_close(payload: bytes) -> tuple[int, str]:
    """``(code, reason)`` of a close frame's payload (1005 when it has none)."""
    if len(payload) < 2:
        return 1005, ""
    return (payload[0] << 8) | payload[1], payload[2:].decode("utf-8")


def _header(opcode: int, length: int) -> bytes:
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    return _header(opcode, len(payload)) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit the 125-byte control limit."""
    encoded = reason.encode("utf-8")[:123]
    while True:
        try:
            encoded.decode("utf-8")
            break
        except UnicodeDecodeError:
            encoded = encoded[:-1]
    return frame(OP_CLOSE, code.to_bytes(2, "big") + encoded)


def encode_frames(
    opcode: int, payloads: list[bytes], deflate: Deflate | None = None
) -> list[bytes]:
    """Header and payload pieces for a batch of messages, ready for one join.

    With ``deflate``, messages of at least ``deflate.min_size`` bytes are
    compressed (RSV1 set); smaller ones go as they are, as RFC 7692 allows.
    """
    pieces: list[bytes] = []
    append = pieces.append
    for payload in payloads:
        if deflate is not None and len(payload) >= deflate.min_size:
            payload = deflate.compress(payload)
            append(_header(opcode | 0x40, len(payload)))
        else:
            append(_header(opcode, len(payload)))
        append(payload)
    return pieces


class Deflate:
    """Negotiated permessage-deflate (RFC 7692), no context takeover either way.

    No zlib state outlives a message, so an idle connection costs nothing
    extra; only messages of at least ``min_size`` bytes are compressed.
    """

    __slots__ = ("min_size", "response", "window_bits")

    def __init__(self, window_bits: int, response: str, min_size: int = 256) -> None:
        self.window_bits = window_bits
        self.response = response
        """The ``Sec-WebSocket-Extensions`` value of the 101 response."""
        self.min_size = min_size

    def compress(self, payload: bytes) -> bytes:
        """One message, compressed on its own, without the trailing 00 00 ff ff."""
        compressor = zlib.compressobj(6, zlib.DEFLATED, -self.window_bits)
        data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return data[:-4]

    @classmethod
    def negotiate(cls, offers: list[str]) -> Deflate | None:
        """Accept the first permessage-deflate offer we can honour, if any."""
        for header in offers:
            for offer in header.split(","):
                name, *params = (part.strip() for part in offer.split(";"))
                if name.lower() != "permessage-deflate":
                    continue
                window_bits = 15
                response = ["permessage-deflate", "server_no_context_takeover"]
                response.append("client_no_context_takeover")
                acceptable = True
                for param in params:
                    key, _, value = param.partition("=")
                    key = key.strip().lower()
                    value = value.strip().strip('"')
                    if key == "server_max_window_bits":
                        if not value.isdigit() or not 9 <= int(value) <= 15:
                            acceptable = False
                            break
                        window_bits = int(value)
                        response.append(f"server_max_window_bits={window_bits}")
                    elif key not in {
                        "client_max_window_bits",
                        "server_no_context_takeover",
                        "client_no_context_takeover",
                    }:
                        acceptable = False
                        break
                if acceptable:
                    return cls(window_bits, "; ".join(response))
        return None
