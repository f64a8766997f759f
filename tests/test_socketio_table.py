"""The Socket.IO translation, case by case, without sockets: what each packet from
an old client becomes in protocol v1, and what each v1 frame becomes for it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from signaling.server.transports.polling import PollingChannel
from signaling.server.transports.socketio import SocketIOTransport


def transport() -> SocketIOTransport:
    return SocketIOTransport(
        PollingChannel("sid"), ping_interval=25, ping_timeout=20, max_payload=65536
    )


SIGNAL = {"type": "offer", "from": "forged", "to": "bob", "sessionId": "s", "data": {"x": [1]}}

INBOUND: list[tuple[str, str, list[dict[str, Any]]]] = [
    ("pong", "3", []),
    ("connect", '40{"userId": "alice"}', [{"type": "auth", "userId": "alice"}]),
    (
        "connect with a token",
        '40{"userId": "alice", "token": "t"}',
        [{"type": "auth", "userId": "alice", "token": "t"}],
    ),
    (
        "connect with a session: an automatic join",
        '40{"userId": "alice", "sessionId": "s"}',
        [
            {"type": "auth", "userId": "alice"},
            {"type": "join-session", "sessionId": "s", "id": "sio:join-session"},
        ],
    ),
    ("connect without auth", "40", [{"type": "auth", "userId": ""}]),
    (
        "a reconnect's pid: a resume (protocol/SPEC.md §10)",
        '40{"userId": "alice", "pid": "r_x", "offset": null}',
        [{"type": "auth", "userId": "alice", "resume": "r_x"}],
    ),
    (
        "a pid past 128 characters: no resume asked",
        '40{"userId": "alice", "pid": "' + "x" * 129 + '"}',
        [{"type": "auth", "userId": "alice"}],
    ),
    (
        "a pid that is not a string",
        '40{"userId": "a", "pid": 7}',
        [{"type": "auth", "userId": "a"}],
    ),
    (
        "join-session with a payload",
        '42["join-session", {"sessionId": "s"}]',
        [{"type": "join-session", "sessionId": "s", "id": "sio:join-session"}],
    ),
    (
        "join-session with the bare id and an ack",
        '4217["join-session", "s"]',
        [{"type": "join-session", "sessionId": "s", "id": "sio17:join-session"}],
    ),
    (
        "leave-session",
        '42["leave-session", {"sessionId": "s"}]',
        [{"type": "leave-session", "sessionId": "s", "id": "sio:leave-session"}],
    ),
    (
        "a signal: data untouched, from dropped",
        "42" + json.dumps(["signal:offer", SIGNAL]),
        [
            {
                "type": "offer",
                "to": "bob",
                "sessionId": "s",
                "id": "sio:signal:offer",
                "data": {"x": [1]},
            }
        ],
    ),
    (
        "an ICE candidate",
        '42["signal:ice-candidate", {"to": "bob", "sessionId": "s", "data": {"candidate": null}}]',
        [
            {
                "type": "ice-candidate",
                "to": "bob",
                "sessionId": "s",
                "id": "sio:signal:ice-candidate",
                "data": {"candidate": None},
            }
        ],
    ),
    (
        "connection-state",
        '42["connection-state", {"sessionId": "s", "state": "connected"}]',
        [
            {
                "sessionId": "s",
                "state": "connected",
                "type": "connection-state",
                "id": "sio:connection-state",
            }
        ],
    ),
    ("an unknown event", '42["dance", {}]', [{"type": "dance", "id": "sio:dance"}]),
    ("not JSON", "42[nope", [{"type": "malformed Socket.IO event", "id": "sio:?"}]),
    ("not an event list", '42{"a": 1}', [{"type": "malformed Socket.IO event", "id": "sio:?"}]),
    ("an unknown packet", "7", []),
]


@pytest.mark.parametrize(("case", "packet", "frames"), INBOUND, ids=[c[0] for c in INBOUND])
async def test_a_packet_from_an_old_client_becomes_these_frames(
    case: str, packet: str, frames: list[dict[str, Any]]
) -> None:
    assert transport()._translate_in(packet) == frames


async def test_a_disconnect_packet_ends_the_connection_as_a_close_1000() -> None:
    sio = transport()
    assert sio._translate_in("41") == []
    assert sio.peer_close == (1000, "")


OUTBOUND: list[tuple[str, dict[str, Any], str]] = [
    (
        "welcome: CONNECT",
        {"type": "welcome", "userId": "a", "connectionId": "c_1", "iceServers": []},
        '40{"sid":"c_1"}',
    ),
    (
        "welcome with a resume token: CONNECT with it as the pid",
        {
            "type": "welcome",
            "userId": "a",
            "connectionId": "c_1",
            "iceServers": [],
            "resumeToken": "r_t",
            "resumeWindowMs": 15000,
        },
        '40{"sid":"c_1","pid":"r_t"}',
    ),
    (
        "a relayed signal in the old shape, without our id",
        {
            "type": "offer",
            "from": "alice",
            "to": "bob",
            "sessionId": "s",
            "data": {"sdp": {"type": "offer", "sdp": "v=0"}, "callId": 7},
            "id": "x",
        },
        '42["signal:offer",{"type":"offer","from":"alice","to":"bob","sessionId":"s",'
        '"data":{"sdp":{"type":"offer","sdp":"v=0"},"callId":7}}]',
    ),
    (
        "the reply to an acknowledged event",
        {
            "type": "session-joined",
            "sessionId": "s",
            "participants": [],
            "replyTo": "sio5:join-session",
        },
        '435[{"type":"session-joined","sessionId":"s","participants":[]}]',
    ),
    (
        "an error names the event it answers",
        {"type": "error", "code": "peer-not-found", "message": "m", "replyTo": "sio:signal:offer"},
        '42["error",{"type":"error","code":"peer-not-found","message":"m","event":"signal:offer"}]',
    ),
    (
        "any other frame: an event named after its type",
        {"type": "user-joined", "sessionId": "s", "userId": "bob"},
        '42["user-joined",{"type":"user-joined","sessionId":"s","userId":"bob"}]',
    ),
]


@pytest.mark.parametrize(("case", "frame", "packet"), OUTBOUND, ids=[c[0] for c in OUTBOUND])
async def test_a_frame_for_an_old_client_becomes_this_packet(
    case: str, frame: dict[str, Any], packet: str
) -> None:
    sio = transport()
    sio._connected = True
    message = json.dumps(frame, separators=(",", ":")).encode()
    assert sio._translate_out(message) == packet.encode()


async def test_a_refused_auth_before_connect_is_a_connect_error() -> None:
    sio = transport()
    out = sio._translate_out(b'{"type":"error","code":"unauthorized","message":"no"}')
    assert out.startswith(b'44{"message":"no"')


async def test_what_connect_holds_back_is_bounded() -> None:
    """CONNECT waits for the join of ``auth.sessionId``, holding what follows, but
    never more than HELD_MAX packets: past that everything goes out in order."""
    from signaling.server.transports.socketio import HELD_MAX

    channel = PollingChannel("sid")
    sio = SocketIOTransport(channel, ping_interval=25, ping_timeout=20, max_payload=65536)
    sio._translate_in('40{"userId": "alice", "sessionId": "s"}')
    welcome = b'{"type":"welcome","userId":"alice","connectionId":"c_1","iceServers":[]}'
    await sio.send([welcome], [])
    # CONNECT itself is the first packet held
    frames = [
        b'{"type":"user-joined","sessionId":"t","userId":"u%d"}' % n for n in range(HELD_MAX - 1)
    ]
    await sio.send(frames[:-1], [])
    assert channel.take_outgoing() == []  # held: no join answer yet
    await sio.send(frames[-1:], [])
    out = channel.take_outgoing()
    assert out[0] == '40{"sid":"c_1"}'
    assert len(out) == HELD_MAX
    assert out[-1].endswith(f'"u{HELD_MAX - 2}"}}]')
