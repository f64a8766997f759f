"""Property test: arbitrary and mutated frames thrown at a live server.

Each message gets error frames (or other well-formed server frames) or a
defined close; the server never crashes, and a call set up beside the fuzzer
carries on undisturbed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.client import connect
from signaling.codec import SERVER_CODECS
from signaling.frames import Error, RelayedIceCandidate
from signaling.server import Hub

from .conftest import TEST_SETTINGS, server_in_thread

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "protocol" / "golden.json").read_text())
CLIENT_FRAMES = [g["frame"] for g in GOLDEN["frames"] if g["direction"] == "client"]
DEFINED_CLOSES = {1000, 1002, 1007, 1009, 4401}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_frames(draw: st.DrawFn) -> dict[str, Any]:
    frame: dict[str, Any] = dict(draw(st.sampled_from(CLIENT_FRAMES)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        keys = sorted(frame)
        action = draw(st.sampled_from(["drop", "retype", "add", "type"]))
        if action == "drop" and keys:
            frame.pop(draw(st.sampled_from(keys)))
        elif action == "retype" and keys:
            frame[draw(st.sampled_from(keys))] = draw(json_values)
        elif action == "add":
            frame[draw(st.text(max_size=10))] = draw(json_values)
        else:
            frame["type"] = draw(
                st.sampled_from(["auth", "offer", "leave-session", "welcome", "error", ""])
                | st.text(max_size=15)
            )
    return frame


@st.composite
def messages(draw: st.DrawFn) -> tuple[bool, str | bytes]:
    """(msgpack?, message)."""
    msgpack = draw(st.booleans())
    kind = draw(st.sampled_from(["mutated", "value", "text", "bytes"]))
    if kind == "mutated":
        frame = draw(mutated_frames())
        return msgpack, msgspec.msgpack.encode(frame) if msgpack else json.dumps(frame)
    if kind == "value":
        value = draw(json_values)
        return msgpack, msgspec.msgpack.encode(value) if msgpack else json.dumps(value)
    if kind == "text":
        return msgpack, draw(st.text(max_size=200))
    return msgpack, draw(st.binary(max_size=200))


@pytest.fixture(scope="module")
def live_server() -> Iterator[tuple[int, Hub]]:
    """One server for every example."""
    with server_in_thread(TEST_SETTINGS) as running:
        yield running


async def fuzz_one(port: int, batch: list[tuple[bool, str | bytes]]) -> None:
    url = f"ws://127.0.0.1:{port}/ws"
    msgpack = batch[0][0]
    subprotocol = "signaling.v1.msgpack" if msgpack else "signaling.v1.json"
    codec = SERVER_CODECS[subprotocol]
    async with (
        connect(url, user_id="alice") as alice,
        connect(url, user_id="bob", encoding="msgpack") as bob,
    ):
        await alice.join("calm")
        await bob.join("calm")
        with trio.fail_after(5):
            await alice.receive()
        async with trio_websocket.open_websocket_url(url, subprotocols=[subprotocol]) as ws:
            auth = {"type": "auth", "userId": "fuzzer"}
            await ws.send_message(msgspec.msgpack.encode(auth) if msgpack else json.dumps(auth))
            await ws.get_message()
            close_code = None
            try:
                for n, (_, message) in enumerate(batch):
                    await ws.send_message(message)
                    sync = {"type": "join-session", "sessionId": "fuzz", "id": f"sync-{n}"}
                    await ws.send_message(
                        msgspec.msgpack.encode(sync) if msgpack else json.dumps(sync)
                    )
                    with trio.fail_after(5):
                        while True:
                            frame = codec.decode(await ws.get_message())
                            if getattr(frame, "reply_to", None) == f"sync-{n}":
                                break
                            if isinstance(frame, Error):
                                assert frame.code in {
                                    "bad-frame",
                                    "not-in-session",
                                    "peer-not-found",
                                }
            except trio_websocket.ConnectionClosed as exc:
                close_code = -1 if exc.reason is None else exc.reason.code
            assert close_code is None or close_code in DEFINED_CLOSES
        # the call beside the fuzzer carries on
        await alice.send_candidate("bob", "calm", {"candidate": "candidate:1", "sdpMid": "0"})
        with trio.fail_after(5):
            relayed = await bob.receive()
        assert isinstance(relayed, RelayedIceCandidate)
        assert relayed.from_ == "alice"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(messages(), min_size=1, max_size=4))
def test_arbitrary_frames_never_break_the_server(
    live_server: tuple[int, Hub], batch: list[tuple[bool, str | bytes]]
) -> None:
    trio.run(partial(fuzz_one, live_server[0], batch))


def test_fuzzing_left_nothing_behind(live_server: tuple[int, Hub]) -> None:
    port, hub = live_server
    empty: list[tuple[bool, str | bytes]] = [(False, "{}")]
    trio.run(fuzz_one, port, empty)
    assert hub.registry.session_count == 0
