"""Frames, codecs and the generated protocol documents."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from signaling.codec import CLIENT_CODECS, JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, SERVER_CODECS
from signaling.errors import BadFrame
from signaling.frames import Offer
from signaling.schema import schema_text

PROTOCOL = Path(__file__).resolve().parents[1] / "protocol"
GOLDEN = json.loads((PROTOCOL / "golden.json").read_text())["frames"]


def _codecs(direction: str) -> dict[str, Any]:
    return CLIENT_CODECS if direction == "client" else SERVER_CODECS


@pytest.mark.parametrize("golden", GOLDEN, ids=[g["name"] for g in GOLDEN])
@pytest.mark.parametrize("subprotocol", [JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL])
def test_golden_frames_round_trip(golden: dict[str, Any], subprotocol: str) -> None:
    codec = _codecs(golden["direction"])[subprotocol]
    wire = (
        json.dumps(golden["frame"]).encode()
        if codec.text
        else msgspec.msgpack.encode(golden["frame"])
    )
    frame = codec.decode(wire)
    assert frame.__struct_config__.tag == golden["frame"]["type"]
    again = codec.encode(frame)
    decoded = json.loads(again) if codec.text else msgspec.msgpack.decode(again)
    assert decoded == golden["frame"]


def test_every_frame_type_has_a_golden_example() -> None:
    client = {g["frame"]["type"] for g in GOLDEN if g["direction"] == "client"}
    server = {g["frame"]["type"] for g in GOLDEN if g["direction"] == "server"}
    assert client == {
        "auth",
        "join-session",
        "leave-session",
        "offer",
        "answer",
        "ice-candidate",
        "connection-state",
    }
    assert server == {
        "welcome",
        "session-joined",
        "session-left",
        "user-joined",
        "user-left",
        "offer",
        "answer",
        "ice-candidate",
        "error",
    }


def test_schema_json_matches_the_structs() -> None:
    assert (PROTOCOL / "schema.json").read_text() == schema_text(), (
        "protocol/schema.json is out of date: run 'signaling schema'"
    )


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"not json", "not a JSON object"),
        (b"[1, 2]", "Expected `object`, got `array`"),
        (b'{"sessionId": "s"}', "missing required field `type`"),
        (b'{"type": "dance"}', "Invalid value 'dance' - at `$.type`"),
        (b'{"type": "join-session"}', "missing required field `sessionId`"),
        (
            b'{"type": "join-session", "sessionId": 7}',
            "Expected `str`, got `int` - at `$.sessionId`",
        ),
        (b'{"type": "join-session", "sessionId": ""}', "at `$.sessionId`"),
        (b'{"type": "join-session", "sessionId": "s", "id": "' + b"x" * 65 + b'"}', "`$.id`"),
        (
            b'{"type": "offer", "to": "b", "sessionId": "s", "data": {"sdp": {"type": "x"}}}',
            "`$.data.sdp.type`",
        ),
        (b'{"type": "ice-candidate", "to": "b", "sessionId": "s", "data": {}}', "`candidate`"),
    ],
)
def test_bad_frames_name_the_problem(wire: bytes, reason: str) -> None:
    with pytest.raises(BadFrame) as caught:
        CLIENT_CODECS[JSON_SUBPROTOCOL].decode(wire)
    assert reason in caught.value.message


def test_bad_msgpack_frame() -> None:
    with pytest.raises(BadFrame, match="not a MessagePack object"):
        CLIENT_CODECS[MSGPACK_SUBPROTOCOL].decode(b"\xc1")


def test_client_supplied_from_is_ignored() -> None:
    wire = json.dumps(
        {
            "type": "offer",
            "from": 12345,
            "to": "b",
            "sessionId": "s",
            "data": {"sdp": {"type": "offer", "sdp": "v=0"}},
        }
    )
    frame = CLIENT_CODECS[JSON_SUBPROTOCOL].decode(wire)
    assert isinstance(frame, Offer)
    assert not hasattr(frame, "from_")


def test_exported_members() -> None:
    import signaling.client
    import signaling.codec
    import signaling.core
    import signaling.errors
    import signaling.frames
    import signaling.server

    for module in (
        signaling,
        signaling.client,
        signaling.codec,
        signaling.core,
        signaling.errors,
        signaling.frames,
        signaling.server,
    ):
        defined_here = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
        }
        assert defined_here <= set(module.__all__), module.__name__
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert value.__doc__, f"{module.__name__}.{name} has no docstring"
