"""Safe to expose: each attack on every input path, against a real server process.

For each attack the suite asserts its own result (the close code or HTTP
status the attacker gets) and the node's health while it runs: RSS grows by
at most 50 MB, file descriptors are back to their baseline within 15 s, no
traceback reaches the log, and a normal pair on the same node keeps relaying
with p99 under 100 ms. Every attack is bounded in count and time and talks
only to 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import psutil
import pytest
import trio
import trio_websocket

from signaling.client import connect
from signaling.frames import RelayedIceCandidate

from .conftest import chromium_call
from .test_cli import Running, clean_env, free_port, running, serve_command

CALL = chromium_call()
CANDIDATE = CALL["offerCandidates"][0]
RSS_LIMIT = 50 * 2**20
P99_LIMIT = 0.1
KEY = base64.b64encode(b"0123456789abcdef").decode()
UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
)


# --- a node, watched -------------------------------------------------------------------


@dataclass
class Node:
    """A ``signaling serve`` process on 127.0.0.1 and what it logged."""

    port: int
    running: Running
    process: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.process = psutil.Process(self.running.process.pid)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def fds(self) -> int:
        return int(self.process.num_fds())


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    """A node with the default settings (rate limit, caps, outbox bounds)."""
    port = free_port()
    command = serve_command(port)
    async with running(command, clean_env(), b"listening on") as server:
        yield Node(port, server)


@dataclass
class Watch:
    peak_rss: int
    baseline_rss: int
    latencies: list[float]


@asynccontextmanager
async def watched(node: Node) -> AsyncIterator[Watch]:
    """A normal pair relaying beside the attack; the node's memory and descriptors."""
    async with (
        connect(node.url, user_id="alice") as alice,
        connect(node.url, user_id="bob") as bob,
        trio.open_nursery() as nursery,
    ):
        await alice.join("calm")
        await bob.join("calm")
        with trio.fail_after(5):
            await alice.receive()
        baseline_fds = node.fds()
        watch = Watch(node.rss(), node.rss(), [])
        stop = trio.Event()

        async def sample() -> None:
            while not stop.is_set():
                watch.peak_rss = max(watch.peak_rss, node.rss())
                await trio.sleep(0.05)

        async def relay() -> None:
            # 4 signals a second each way: inside the default rate limit
            while not stop.is_set():
                sent = trio.current_time()
                await alice.send_candidate("bob", "calm", CANDIDATE)
                with trio.fail_after(5):
                    frame = await bob.receive()
                assert isinstance(frame, RelayedIceCandidate)
                watch.latencies.append(trio.current_time() - sent)
                await trio.sleep(0.25)

        nursery.start_soon(sample)
        nursery.start_soon(relay)
        yield watch
        stop.set()
    watch.peak_rss = max(watch.peak_rss, node.rss())
    growth = watch.peak_rss - watch.baseline_rss
    assert growth <= RSS_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB"
    assert watch.latencies, "the pair relayed nothing"
    latencies = sorted(watch.latencies)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    assert p99 < P99_LIMIT, f"the pair's p99 was {p99 * 1000:.0f} ms during the attack"
    # back to the baseline within 15 s (the pair's own two connections closed too)
    for _ in range(150):
        if node.fds() <= baseline_fds - 2:
            break
        await trio.sleep(0.1)
    assert node.fds() <= baseline_fds - 2, f"{node.fds()} descriptors, {baseline_fds} before"
    assert b"Traceback" not in node.running.stderr, node.running.stderr.decode()[-3000:]


# --- raw clients -------------------------------------------------------------------------


def masked(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """One client frame (masked with a zero key: the bytes stay readable)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + b"\0\0\0\0" + payload


async def raw(node: Node) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", node.port)


async def read_head(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    return data


async def read_all(stream: trio.SocketStream, limit: float = 5) -> bytes:
    """Everything until the server closes (bounded in time)."""
    data = b""
    with trio.move_on_after(limit):
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:
            pass
    return data


def close_code(data: bytes) -> int | None:
    """The code of the server's close frame in ``data`` (after any 101 head)."""
    if b"\r\n\r\n" in data:
        data = data.split(b"\r\n\r\n", 1)[1]
    pos = 0
    while pos + 2 <= len(data):
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        header = 2
        if length == 126:
            length, header = struct.unpack("!H", data[pos + 2 : pos + 4])[0], 4
        elif length == 127:
            length, header = struct.unpack("!Q", data[pos + 2 : pos + 10])[0], 10
        if opcode == 0x8:
            payload = data[pos + header : pos + header + length]
            return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
        pos += header + length
    return None


async def websocket(node: Node, user: str | None = "mallory") -> trio.SocketStream:
    stream = await raw(node)
    await stream.send_all(f"GET /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n".encode())
    assert b" 101 " in (await read_head(stream)).split(b"\r\n")[0]
    if user is not None:
        await stream.send_all(masked(1, json.dumps({"type": "auth", "userId": user}).encode()))
    return stream


async def attack(node: Node, run: Callable[[], Awaitable[None]]) -> None:
    async with watched(node):
        with trio.fail_after(60):
            await run()


# --- 1. one WebSocket path per port --------------------------------------------------------

BOMB = zlib.compressobj(9, zlib.DEFLATED, -15)
BOMB_MESSAGE = BOMB.compress(b"\0" * 65_000) + BOMB.flush(zlib.Z_SYNC_FLUSH)[:-4]

VARIANTS = {
    "percent-encoded": (f"GET /%77s HTTP/1.1\r\nHost: x\r\n{UPGRADE}", 101),
    "double slash": (f"GET //ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}", 404),
    "lowercase method": (f"get /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}", 400),
    "absolute form": (f"GET http://x/ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}", 101),
    "h2c then websocket": (
        f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n{UPGRADE}".replace(
            "Connection: Upgrade", "Connection: Upgrade, HTTP2-Settings"
        ),
        101,
    ),
    "h2c alone": (
        "GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings"
        "\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        400,
    ),
    "folded header": (f"GET /ws HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n{UPGRADE}", 400),
    "pipelined after /health": (
        f"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}",
        200,
    ),
    "HTTP/1.0": (f"GET /ws HTTP/1.0\r\n{UPGRADE}", 400),
    "no Host": (f"GET /ws HTTP/1.1\r\n{UPGRADE}", 400),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_every_upgrade_reaches_one_websocket_path(node: Node, variant: str) -> None:
    """Each variant is served by the lean path (its limits, no deflate) or refused; 20
    compressed 65 KB messages, before auth, cost nothing."""
    head, status = VARIANTS[variant]
    answers: list[bytes] = []

    async def run() -> None:
        for _ in range(5):
            stream = await raw(node)
            request = (head + "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n").encode()
            await stream.send_all(request)
            answer = await read_head(stream)
            if b" 101 " in answer.split(b"\r\n")[0]:
                for _ in range(20):
                    try:
                        await stream.send_all(masked(2, BOMB_MESSAGE, rsv1=True))
                    except trio.BrokenResourceError:
                        break
            answers.append(answer + await read_all(stream))
            await stream.aclose()

    await attack(node, run)
    for answer in answers:
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
        assert b"sec-websocket-extensions" not in answer.lower()
        if status == 101:
            assert close_code(answer) == 1002  # RSV1 without a negotiated extension
        else:
            assert b" 101 " not in answer  # nothing after the refusal, or after /health


# --- 2. replies to a client that does not read ------------------------------------------------


async def _non_reader(node: Node) -> trio.SocketStream:
    stream = await raw(node)
    stream.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await stream.send_all(f"GET /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n".encode())
    await read_head(stream)
    return stream


async def test_ping_flood_queues_one_pong(node: Node) -> None:
    async def run() -> None:
        stream = await _non_reader(node)
        ping = masked(0x9, b"x" * 125)
        with trio.move_on_after(4):
            for _ in range(400):
                await stream.send_all(ping * 500)  # 200,000 pings, 26 MB
        await stream.aclose()

    await attack(node, run)


async def test_invalid_frames_flood_is_bounded(node: Node) -> None:
    """18 MB of ``{}`` after auth, never reading: rate-limited, then closed."""
    codes: list[int | None] = []

    async def run() -> None:
        stream = await _non_reader(node)
        await stream.send_all(masked(1, b'{"type": "auth", "userId": "mallory"}'))
        empty = masked(1, b"{}") * 10_000
        try:
            with trio.move_on_after(8):
                for _ in range(300):
                    await stream.send_all(empty)
                    await trio.sleep(0.01)
        except trio.BrokenResourceError:
            pass
        codes.append(close_code(await read_all(stream, 2)))
        await stream.aclose()

    await attack(node, run)
    assert codes[0] in (4429, 1013, None)  # None: the close frame was behind unread data


# --- 3. fragments -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1])
async def test_fragments_are_bounded(node: Node, size: int) -> None:
    codes: list[int | None] = []

    async def run() -> None:
        stream = await websocket(node)
        await stream.send_all(masked(1, b"{" * size, fin=False))
        piece = masked(0, b"x" * size, fin=False) * 2000
        try:
            for _ in range(50):
                await stream.send_all(piece)
        except trio.BrokenResourceError:
            pass
        codes.append(close_code(await read_all(stream, 2)))
        await stream.aclose()

    await attack(node, run)
    assert codes == [1009]


# --- 4. Engine.IO upgrades -----------------------------------------------------------------------


async def _polling_session(node: Node) -> str:
    stream = await raw(node)
    await stream.send_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await read_all(stream, 5)
    await stream.aclose()
    body = answer.split(b"\r\n\r\n", 1)[1]
    sid: str = json.loads(body[1:])["sid"]
    return sid


async def test_engine_io_upgrades_of_one_sid_leak_nothing(node: Node) -> None:
    statuses: list[bytes] = []

    async def run() -> None:
        sid = await _polling_session(node)
        streams = []
        for _ in range(300):
            stream = await raw(node)
            await stream.send_all(
                f"GET /socket.io/?EIO=4&transport=websocket&sid={sid} HTTP/1.1\r\n"
                f"Host: x\r\n{UPGRADE}\r\n".encode()
            )
            streams.append(stream)
        for stream in streams:
            head = await read_head(stream)
            statuses.append(head.split(b"\r\n")[0])
            if b" 101 " in head:
                await stream.send_all(masked(1, b"2probe") + masked(1, b"5"))
        for stream in streams:
            await stream.aclose()

    await attack(node, run)
    assert sum(b" 101 " in s for s in statuses) >= 1
    assert all(b" 101 " in s or b" 400 " in s for s in statuses)


# --- 6. polling without GETs ------------------------------------------------------------------


async def test_polling_posts_without_gets_are_bounded(node: Node) -> None:
    answers: list[bytes] = []

    async def run() -> None:
        sid = await _polling_session(node)
        body = b"40" + json.dumps({"userId": "poller"}).encode()
        pings = "\x1e".join(["2"] * 100).encode()
        for n in range(600):
            stream = await raw(node)
            payload = body if n == 0 else pings
            await stream.send_all(
                f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            answers.append((await read_all(stream, 5)).split(b"\r\n")[0])
            await stream.aclose()

    await attack(node, run)
    # accepted while the session lived, then refused: it ended (packets nobody fetched)
    assert answers[0].startswith(b"HTTP/1.1 200")
    assert answers[-1].startswith(b"HTTP/1.1 400")


# --- 7. HTTP bodies ------------------------------------------------------------------------------


async def test_large_unfinished_bodies_are_refused_before_buffering(node: Node) -> None:
    """60 POSTs announcing 15 MiB: each is refused from its Content-Length, and the
    megabyte each then pushes is not kept."""
    answers: list[bytes] = []

    async def run() -> None:
        streams = []
        for _ in range(60):
            stream = await raw(node)
            await stream.send_all(
                b"POST /turn/credentials HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: 15728640\r\n\r\n"
            )
            streams.append(stream)
        for stream in streams:
            answers.append((await read_head(stream)).split(b"\r\n")[0])
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(b"x" * 1_000_000)
            await stream.aclose()

    await attack(node, run)
    assert all(answer.startswith(b"HTTP/1.1 413") for answer in answers), answers[:3]


async def test_a_trickled_body_is_cut_off(node: Node) -> None:
    answers: list[tuple[bytes, float]] = []

    async def run() -> None:
        stream = await raw(node)
        started = trio.current_time()
        await stream.send_all(
            b"POST /turn/credentials HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: 100\r\n\r\n"
        )
        answer = b""
        with trio.move_on_after(20):
            for _ in range(100):
                with trio.move_on_after(2):
                    answer += await stream.receive_some(4096)
                if answer:
                    break
                await stream.send_all(b" ")
        answers.append((answer.split(b"\r\n")[0], trio.current_time() - started))
        await stream.aclose()

    await attack(node, run)
    [(status, took)] = answers
    assert status.startswith(b"HTTP/1.1 408"), status
    assert took < 15


# --- 8. no tracebacks from unauthenticated input -------------------------------------------


async def test_deep_nesting_in_a_socketio_event_is_a_clean_error(node: Node) -> None:
    answers: list[bytes] = []

    async def run() -> None:
        stream = await raw(node)
        await stream.send_all(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n{UPGRADE}"
            "\r\n".encode()
        )
        await read_head(stream)
        await stream.send_all(masked(1, b"40" + json.dumps({"userId": "deep"}).encode()))
        await stream.send_all(masked(1, b"42" + b"[" * 50_000))
        await stream.send_all(masked(1, b"42" + b"{" * 50_000))
        answers.append(await read_all(stream, 2))
        await stream.aclose()

    await attack(node, run)
    assert b'"code":"bad-frame"' in answers[0].replace(b" ", b"")


async def test_protocol_errors_during_an_engine_io_upgrade_close_cleanly(node: Node) -> None:
    codes: list[int | None] = []

    async def run() -> None:
        sid = await _polling_session(node)
        stream = await raw(node)
        await stream.send_all(
            f"GET /socket.io/?EIO=4&transport=websocket&sid={sid} HTTP/1.1\r\nHost: x\r\n"
            f"{UPGRADE}\r\n".encode()
        )
        await read_head(stream)
        await stream.send_all(b"\x81\x05hello")  # unmasked: RFC 6455 says close 1002
        codes.append(close_code(await read_all(stream, 2)))
        await stream.aclose()

    await attack(node, run)
    assert codes == [1002]


# --- 11. RFC 6455 and the request head -----------------------------------------------------------


async def test_invalid_utf8_anywhere_in_a_text_message_closes_1007(node: Node) -> None:
    stream = await websocket(node, user=None)
    await stream.send_all(masked(1, b'{"type": "auth", "userId": "u", "x": "\xff\xfe"}'))
    assert close_code(await read_all(stream, 2)) == 1007
    await stream.aclose()


async def test_a_close_before_auth_is_echoed(node: Node) -> None:
    stream = await websocket(node, user=None)
    await stream.send_all(masked(8, struct.pack("!H", 1000)))
    assert close_code(await read_all(stream, 2)) == 1000
    await stream.aclose()


async def test_an_oversized_head_in_one_read_is_refused(node: Node) -> None:
    stream = await raw(node)
    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
    assert (await read_all(stream, 2)).startswith(b"HTTP/1.1 431 ")
    await stream.aclose()


async def test_a_bare_lf_head_is_answered_at_once(node: Node) -> None:
    stream = await raw(node)
    started = trio.current_time()
    await stream.send_all(b"GET /health HTTP/1.1\nHost: x\n\n")
    assert (await read_all(stream, 5)).startswith(b"HTTP/1.1 400 ")
    assert trio.current_time() - started < 2
    await stream.aclose()


# --- 9, 10. labels and log lines -----------------------------------------------------------------


async def test_connection_states_do_not_grow_the_metrics(node: Node) -> None:
    async def run() -> None:
        async with connect(node.url, user_id="states") as client:
            await client.join("s")
            for n in range(40):
                await client.report_state("s", f"state-{n}")
                await trio.sleep(0.11)  # inside the rate limit

    await attack(node, run)
    stream = await raw(node)
    await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    metrics = await read_all(stream, 5)
    await stream.aclose()
    lines = [
        line for line in metrics.split(b"\n") if line.startswith(b"signaling_connection_states")
    ]
    assert b'state="other"' in b"".join(lines)
    assert not any(b"state-" in line for line in lines)


async def test_control_characters_cannot_forge_log_lines(node: Node) -> None:
    async with connect(node.url, user_id="eve\r\n2026-01-01 INFO forged") as client:
        await client.join("s\nINFO forged too")
        await client.report_state("s\nINFO forged too", "connected\r\nforged")
    text = node.running.stderr.decode()
    assert not [line for line in text.splitlines() if "forged" in line and "\\n" not in line]
    assert "eve\\r\\n2026-01-01 INFO forged" in text


async def test_resume_tokens_cannot_be_guessed_and_drops_are_bounded(node: Node) -> None:
    """The resume path (protocol/SPEC.md §10): guessed or replayed tokens resume
    nothing, and the away connections of a client that joins and drops in a loop
    count against its IP's cap (at a cap of 3: tests/test_adversarial.py), while
    the process's memory and descriptors stay flat."""

    async def run() -> None:
        for n in range(60):
            async with trio_websocket.open_websocket_url(node.url) as ws:
                resume = f"r_{n:04d}" + "A" * 20
                await ws.send_message(
                    json.dumps({"type": "auth", "userId": f"g{n}", "resume": resume})
                )
                welcome = json.loads(await ws.get_message())
                assert welcome["resumed"] is False
                await ws.send_message(json.dumps({"type": "join-session", "sessionId": "x"}))
                await ws.get_message()
                await ws._stream.aclose()  # a drop: away, counted against this IP

    await attack(node, run)
    stream = await raw(node)
    await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    metrics = await read_all(stream, 5)
    await stream.aclose()
    (away,) = [
        line for line in metrics.split(b"\n") if line.startswith(b"signaling_away_connections ")
    ]
    assert float(away.split()[1]) == 60  # held for the window, within the IP's cap (256)
    assert b'signaling_resumes_total{outcome="refused"}' in metrics
    assert b'signaling_resumes_total{outcome="resumed"}' not in metrics
