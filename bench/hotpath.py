"""The relay path in one process: µs of CPU a relayed message costs, without the network.

On a shared VM the load generator's figures swing by 10-20% from one run to
the next (bench/RESULTS.md: steal), which hides a change worth 1-2%. This
runs the server as deployed (default rate limits, metrics, logs at INFO to
/dev/null) on a `MemoryListener` in this process, joins ``--pairs`` pairs of
raw WebSocket clients on socket pairs, and relays ``--messages`` ICE
candidates one at a time, each direction in turn: every message is read,
routed and written alone, as on the realistic shape. It prints the CPU this
process spent per message (server and clients; the clients' share is the
same for any build, so the difference between two builds is the server's).

    .venv/bin/python bench/hotpath.py --pairs 250 --messages 20000
    .venv/bin/python bench/hotpath.py --pairs 250 --messages 20000 --calls

Compare builds by running it on each, one after the other, a few times;
``--calls`` counts the function calls a message costs instead, the same in
every run, so a change that removes work shows even when the machine's
speed drifts. With ``--calls``, ``HOTPATH_TOP=40`` also prints the 40
most-called functions (calls a message each), and ``HOTPATH_CALLERS=name``
who calls the functions so named. It reaches nothing beyond this process:
no port, no network.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import json
import logging
import os
import pstats
import socket
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from signaling.server.config import Settings
from signaling.server.hub import Hub
from signaling.server.memory import MemoryListener
from signaling.server.serve import serve, tune_gc

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "chromium-call.json"
CANDIDATE = json.loads(FIXTURE.read_text())["offerCandidates"][0]
"""The real Chromium candidate the load generator sends too."""


def masked(message: dict[str, Any]) -> bytes:
    """One masked client text frame (RFC 6455 5.3)."""
    payload = json.dumps(message).encode()
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    length = bytes((0x80 | n,)) if n < 126 else bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    return b"\x81" + length + mask + body


async def receive(sock: socket.socket) -> bytes:
    """What the server sent next (its frames are small: one read holds them)."""
    await trio.lowlevel.wait_readable(sock)
    return sock.recv(65536)


async def open_client(listener: MemoryListener, user: str, session: str) -> socket.socket:
    stream = await listener.connect()
    sock: socket.socket = stream.socket._sock  # type: ignore[attr-defined]
    key = base64.b64encode(os.urandom(16)).decode()
    sock.send(
        (
            "GET /ws HTTP/1.1\r\nHost: memory\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await receive(sock)
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.send(masked({"type": "auth", "userId": user}))
    assert b"welcome" in await receive(sock)
    sock.send(masked({"type": "join-session", "sessionId": session}))
    assert b"session-joined" in await receive(sock)
    return sock


async def run(pairs: int, messages: int, calls: bool) -> dict[str, Any]:
    settings = Settings(host="127.0.0.1", port=0, max_connections_per_ip=0)
    listener = MemoryListener(backlog=2 * pairs)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        hub = Hub(settings)
        await nursery.start(
            partial(serve, settings, hub=hub, shutdown_trigger=stop.wait, listeners=[listener])
        )
        clients: list[tuple[socket.socket, socket.socket, bytes, bytes]] = []
        for k in range(pairs):
            a = await open_client(listener, f"a{k}", f"s{k}")
            b = await open_client(listener, f"b{k}", f"s{k}")
            assert b"user-joined" in await receive(a)
            candidate = {"candidate": CANDIDATE}
            signal = {"type": "ice-candidate", "sessionId": f"s{k}", "data": candidate}
            to_b = masked({**signal, "to": f"b{k}"})
            clients.append((a, b, to_b, masked({**signal, "to": f"a{k}"})))
        tune_gc()
        profile = cProfile.Profile() if calls else None
        if profile is not None:
            profile.enable()
        cpu = time.process_time()
        wall = time.perf_counter()
        with trio.fail_after(max(60.0, messages / 100)):
            for i in range(messages):
                a, b, to_b, to_a = clients[(i >> 1) % pairs]
                sender, receiver, data = (a, b, to_b) if i & 1 == 0 else (b, a, to_a)
                sender.send(data)
                got = await receive(receiver)
                assert b"ice-candidate" in got, got[:200]
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - wall
        if profile is not None:
            profile.disable()
        stop.set()
    result: dict[str, Any] = {
        "scenario": "hotpath",
        "pairs": pairs,
        "messages": messages,
        "us_per_msg": round(1e6 * cpu / messages, 2),
        "wall_us_per_msg": round(1e6 * wall / messages, 2),
    }
    if profile is not None:
        # the profiler slows everything: its times mean little, its counts are exact
        table = pstats.Stats(profile)
        result["calls_per_msg"] = round(table.total_calls / messages, 2)  # type: ignore[attr-defined]
        if os.environ.get("HOTPATH_TOP"):
            counts = sorted(
                ((v[1], k) for k, v in table.stats.items()),  # type: ignore[attr-defined]
                reverse=True,
            )
            if os.environ.get("HOTPATH_CALLERS"):
                table.print_callers(os.environ["HOTPATH_CALLERS"])
            for n, (file, line, name) in counts[: int(os.environ["HOTPATH_TOP"])]:
                print(f"{n / messages:6.2f} {name} {file.split('site-packages/')[-1]}:{line}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=250)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument(
        "--calls",
        action="store_true",
        help="count Python function calls (C functions included) per message under "
        "cProfile: exact from run to run, where CPU time is not",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # noqa: SIM115
    print(json.dumps(trio.run(run, args.pairs, args.messages, args.calls)))


if __name__ == "__main__":
    main()
