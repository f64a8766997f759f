"""JSON and MessagePack codecs, built once and reused for every frame.

The subprotocol a client offers picks the codec (protocol/SPEC.md §1):
``signaling.v1.json`` (text frames, also the default) or
``signaling.v1.msgpack`` (binary frames). Both carry the same shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from .errors import BadFrame
from .frames import ClientFrame, ServerFrame

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CLIENT_CODECS",
    "JSON_SUBPROTOCOL",
    "MSGPACK_SUBPROTOCOL",
    "SERVER_CODECS",
    "Codec",
    "probe_id",
]

JSON_SUBPROTOCOL: Final = "signaling.v1.json"
MSGPACK_SUBPROTOCOL: Final = "signaling.v1.msgpack"

_T = TypeVar("_T")


class _IdProbe(msgspec.Struct):
    id: str | UnsetType = UNSET


_PROBE_JSON = msgspec.json.Decoder(_IdProbe)
_PROBE_MSGPACK = msgspec.msgpack.Decoder(_IdProbe)


def probe_id(payload: bytes | str, *, text: bool) -> str | UnsetType:
    """The ``id`` of a frame that failed validation, if it has a usable one."""
    try:
        if text:
            probe = _PROBE_JSON.decode(payload)
        elif isinstance(payload, bytes):
            probe = _PROBE_MSGPACK.decode(payload)
        else:
            return UNSET
    except (msgspec.DecodeError, ValueError, RecursionError):
        return UNSET
    if isinstance(probe.id, str) and len(probe.id) <= 64:
        return probe.id
    return UNSET


class Codec(Generic[_T]):
    """Decodes frames of type ``_T`` and encodes any frame, for one subprotocol."""

    __slots__ = ("_decode", "encode", "subprotocol", "text")

    def __init__(self, subprotocol: str, frame_type: Any) -> None:
        self.subprotocol = subprotocol
        self.text = subprotocol == JSON_SUBPROTOCOL
        """True: frames travel as WebSocket text frames; False: binary frames."""
        self._decode: Callable[[Any], Any]
        self.encode: Callable[[Any], bytes]
        """The wire bytes of one frame: msgspec's encoder itself, not a method
        around it (one call less for every frame sent)."""
        if self.text:
            self._decode = msgspec.json.Decoder(frame_type).decode
            self.encode = msgspec.json.Encoder().encode
        else:
            self._decode = msgspec.msgpack.Decoder(frame_type).decode
            self.encode = msgspec.msgpack.Encoder().encode

    def decode(self, payload: bytes | str) -> _T:
        """One frame from one WebSocket message; raises `BadFrame` with the reason.

        Invalid UTF-8 in a JSON string raises `UnicodeDecodeError` (the
        transport closes with 1007 for that, as RFC 6455 asks).
        """
        try:
            frame: _T = self._decode(payload)
        except msgspec.ValidationError as exc:
            raise BadFrame(f"invalid frame: {exc}") from exc
        except UnicodeDecodeError:
            raise
        except msgspec.DecodeError as exc:
            kind = "JSON" if self.text else "MessagePack"
            raise BadFrame(f"not a {kind} object: {exc}") from exc
        except RecursionError as exc:
            raise BadFrame("invalid frame: nested too deeply") from exc
        return frame


CLIENT_CODECS: Final[dict[str, Codec[ClientFrame]]] = {
    JSON_SUBPROTOCOL: Codec(JSON_SUBPROTOCOL, ClientFrame),
    MSGPACK_SUBPROTOCOL: Codec(MSGPACK_SUBPROTOCOL, ClientFrame),
}
"""Codecs the server uses: decode client frames, encode server frames."""

SERVER_CODECS: Final[dict[str, Codec[ServerFrame]]] = {
    JSON_SUBPROTOCOL: Codec(JSON_SUBPROTOCOL, ServerFrame),
    MSGPACK_SUBPROTOCOL: Codec(MSGPACK_SUBPROTOCOL, ServerFrame),
}
"""Codecs a client uses: decode server frames, encode client frames."""
