"""Load generator for the signaling server: one JSON line per run.

Starts ``signaling serve`` on 127.0.0.1 pinned to one core, drives it from
worker processes (trio-websocket clients) pinned to the other cores, and
reports offered and delivered messages/s, latency percentiles, and the
server's CPU and RSS. Every loop is bounded in count and time.

    python bench/loadgen.py steady   --pairs 100 --rate 5000 --duration 10
    python bench/loadgen.py saturate --pairs 50 --window 32 --duration 10
    python bench/loadgen.py idle     --connections 10000
    python bench/loadgen.py setup    --calls 1000 --concurrency 50

``--url`` measures a server you started yourself (no CPU/RSS figures then).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import trio
import trio_websocket

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "chromium-call.json"
DEFLATE = [(b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits")]


def load_call() -> dict[str, Any]:
    """The real Chromium call the tests use (tests/fixtures/README.md)."""
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


CALL = load_call()
CANDIDATE = CALL["offerCandidates"][0]


# --- the client side (runs in worker processes) ---------------------------------


class RawClient:
    """A minimal RFC 6455 client for ``--client raw``: no reader task, batched reads.

    Each message is still one masked frame in one write, as a browser sends
    it; only the generator's own per-message cost is smaller, so that it can
    outrun the server it measures.
    """

    def __init__(self, stream: trio.SocketStream, leftover: bytes, deflate: bool) -> None:
        self.stream = stream
        # Like a browser, accept permessage-deflate when the server picks it.
        self.inflater = zlib.decompressobj(-15) if deflate else None
        self.buffer = leftover
        self.pending: deque[str] = deque()
        self.pongs: list[bytes] = []
        self.key = os.urandom(4)

    @classmethod
    async def connect(cls, url: str) -> RawClient:
        parsed = urlsplit(url)
        stream = await trio.open_tcp_stream(parsed.hostname or "127.0.0.1", parsed.port or 80)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: signaling.v1.json\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        )
        await stream.send_all(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        deflate = b"permessage-deflate" in head.lower()
        return cls(stream, rest, deflate)

    def _mask(self, payload: bytes) -> bytes:
        n = len(payload)
        key = int.from_bytes((self.key * (n // 4 + 1))[:n], "little")
        masked = (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")
        if n < 126:
            header = bytes((0x81, 0x80 | n))
        elif n < 65536:
            header = bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x81, 0xFF)) + n.to_bytes(8, "big")
        return header + self.key + masked

    async def send_message(self, text: str) -> None:
        await self.stream.send_all(self._mask(text.encode()))

    async def get_message(self) -> str:
        while not self.pending:
            if self.buffer:
                self._parse()
                if self.pending:
                    break
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buffer += chunk
            self._parse()
            for pong in self.pongs:
                await self.stream.send_all(pong)
            self.pongs.clear()
        return self.pending.popleft()

    def _parse(self) -> None:
        data, pos, end = self.buffer, 0, len(self.buffer)
        while end - pos >= 2:
            compressed = data[pos] & 0x40
            opcode, length, start = data[pos] & 0x0F, data[pos + 1] & 0x7F, pos + 2
            if length == 126:
                length, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                length, start = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
            if start > end or start + length > end:
                break
            payload = data[start : start + length]
            pos = start + length
            if opcode == 0x1:
                if compressed and self.inflater is not None:
                    payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
                self.pending.append(payload.decode())
            elif opcode == 0x9:
                self.pongs.append(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
            elif opcode == 0x8:
                raise ConnectionError(f"server closed: {payload[:2].hex()}")
        self.buffer = data[pos:]

    async def aclose(self) -> None:
        await self.stream.aclose()


async def open_user(url: str, user_id: str, session_id: str) -> Any:
    """Connect like a browser (offering permessage-deflate), auth and join."""
    ws: Any
    if CLIENT[0] == "raw":
        ws = await RawClient.connect(url)
    else:
        ws = await trio_websocket.connect_websocket_url(
            NURSERY[0], url, subprotocols=["signaling.v1.json"], extra_headers=DEFLATE
        )
    await ws.send_message(json.dumps({"type": "auth", "userId": user_id}))
    welcome = json.loads(await ws.get_message())
    assert welcome["type"] == "welcome", welcome
    await ws.send_message(json.dumps({"type": "join-session", "sessionId": session_id}))
    while json.loads(await ws.get_message())["type"] != "session-joined":
        pass
    return ws


NURSERY: list[trio.Nursery] = []
CLIENT = ["trio-websocket"]


def candidate_frame(to: str, session_id: str, stamp: int) -> str:
    return json.dumps(
        {
            "type": "ice-candidate",
            "to": to,
            "sessionId": session_id,
            "id": str(stamp),
            "data": {"candidate": CANDIDATE},
        }
    )


async def open_pairs(url: str, first: int, count: int) -> list[tuple[Any, Any, str]]:
    pairs: list[tuple[Any, Any, str]] = []
    for n in range(first, first + count):
        session = f"s{n}"
        a = await open_user(url, f"a{n}", session)
        b = await open_user(url, f"b{n}", session)
        await a.get_message()  # user-joined b
        pairs.append((a, b, session))
    return pairs


async def steady_worker(cfg: dict[str, Any], conn: Any) -> dict[str, Any]:
    """Each user sends candidate frames to its partner on a fixed schedule."""
    pairs = await open_pairs(cfg["url"], cfg["first"], cfg["count"])
    users = [
        (a, f"b{n}", s) for n, (a, _, s) in zip(range(cfg["first"], 10**9), pairs, strict=False)
    ]
    users += [
        (b, f"a{n}", s) for n, (_, b, s) in zip(range(cfg["first"], 10**9), pairs, strict=False)
    ]
    interval = len(users) / cfg["worker_rate"] if cfg["worker_rate"] else 0.0
    latencies: list[int] = []
    counts = {"sent": 0, "received": 0, "errors": 0}
    all_sent = False
    drained = trio.Event()
    conn.send("ready")
    start_at = conn.recv()
    end = start_at + cfg["duration"]
    saturate = cfg["mode"] == "saturate"

    async def sender(ws: Any, to: str, session: str, offset: float, sem: Any) -> None:
        await trio.sleep_until(_trio_deadline(start_at + offset))
        n = 0
        while True:
            scheduled = start_at + offset + n * interval
            if (time.perf_counter() if sem is not None else scheduled) >= end:
                return
            if sem is not None:
                await sem.acquire()
            else:
                await trio.sleep_until(_trio_deadline(scheduled))
            stamp = time.perf_counter_ns() if sem is not None else int(scheduled * 1e9)
            await ws.send_message(candidate_frame(to, session, stamp))
            counts["sent"] += 1
            n += 1

    async def receiver(ws: Any, sem: Any) -> None:
        while True:
            frame = json.loads(await ws.get_message())
            if frame.get("type") != "ice-candidate":  # an error (rate-limited, ...): count it
                counts["errors"] += 1
                continue
            latencies.append(time.perf_counter_ns() - int(frame["id"]))
            counts["received"] += 1
            if sem is not None:
                sem.release()
            if all_sent and counts["received"] >= counts["sent"]:
                drained.set()

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as inner:
            for i, (ws, to, session) in enumerate(users):
                sem = trio.Semaphore(cfg["window"]) if saturate else None
                # the partner's receiver releases this sender's window
                nursery.start_soon(receiver, _partner_ws(users, i), sem)
                inner.start_soon(sender, ws, to, session, i * interval / len(users), sem)
        all_sent = True
        if counts["received"] >= counts["sent"]:
            drained.set()
        with trio.move_on_at(_trio_deadline(end + 2.0)):
            await drained.wait()
        nursery.cancel_scope.cancel()
    return {
        "sent": counts["sent"],
        "received": counts["received"],
        "errors": counts["errors"],
        "latencies": latencies,
    }


def _partner_ws(users: list[tuple[Any, str, str]], i: int) -> Any:
    half = len(users) // 2
    return users[i + half][0] if i < half else users[i - half][0]


def _trio_deadline(wall: float) -> float:
    return trio.current_time() + (wall - time.perf_counter())


async def idle_worker(cfg: dict[str, Any], conn: Any) -> dict[str, Any]:
    pairs = await open_pairs(cfg["url"], cfg["first"], cfg["count"])
    conn.send("ready")
    conn.recv()  # measured; hold until told to finish (the process exit closes them)
    return {"connections": 2 * len(pairs)}


async def setup_worker(cfg: dict[str, Any], conn: Any) -> dict[str, Any]:
    """Full call set-ups: two users join, offer, answer, 10 candidates each way."""
    url = cfg["url"]
    conn.send("ready")
    start_at = conn.recv()
    del start_at
    durations: list[int] = []
    limiter = trio.Semaphore(cfg["concurrency"])
    candidates = [dict(CANDIDATE, candidate=f"{CANDIDATE['candidate']} n{i}") for i in range(10)]

    async def one(n: int) -> None:
        async with limiter:
            began = time.perf_counter_ns()
            session = f"call{cfg['first']}-{n}"
            a = await open_user(url, f"ca{cfg['first']}-{n}", session)
            b = await open_user(url, f"cb{cfg['first']}-{n}", session)
            await a.get_message()
            await a.send_message(
                json.dumps(
                    {
                        "type": "offer",
                        "to": b_id(cfg, n),
                        "sessionId": session,
                        "data": {"sdp": CALL["offer"]},
                    }
                )
            )
            assert json.loads(await b.get_message())["type"] == "offer"
            await b.send_message(
                json.dumps(
                    {
                        "type": "answer",
                        "to": a_id(cfg, n),
                        "sessionId": session,
                        "data": {"sdp": CALL["answer"]},
                    }
                )
            )
            for c in candidates:
                await a.send_message(
                    json.dumps(
                        {
                            "type": "ice-candidate",
                            "to": b_id(cfg, n),
                            "sessionId": session,
                            "data": {"candidate": c},
                        }
                    )
                )
                await b.send_message(
                    json.dumps(
                        {
                            "type": "ice-candidate",
                            "to": a_id(cfg, n),
                            "sessionId": session,
                            "data": {"candidate": c},
                        }
                    )
                )
            assert json.loads(await a.get_message())["type"] == "answer"
            for _ in candidates:
                await a.get_message()
                await b.get_message()
            durations.append(time.perf_counter_ns() - began)
            await a.aclose()
            await b.aclose()

    async with trio.open_nursery() as nursery:
        for n in range(cfg["count"]):
            nursery.start_soon(one, n)
    return {"calls": len(durations), "latencies": durations}


def a_id(cfg: dict[str, Any], n: int) -> str:
    return f"ca{cfg['first']}-{n}"


def b_id(cfg: dict[str, Any], n: int) -> str:
    return f"cb{cfg['first']}-{n}"


WORKERS = {
    "steady": steady_worker,
    "saturate": steady_worker,
    "idle": idle_worker,
    "setup": setup_worker,
}


def worker_main(cfg: dict[str, Any], conn: Any) -> None:
    if cfg.get("cpus"):
        os.sched_setaffinity(0, cfg["cpus"])

    CLIENT[0] = cfg["client"]

    async def main() -> dict[str, Any]:
        async with trio.open_nursery() as nursery:
            NURSERY.append(nursery)
            with trio.fail_after(cfg["duration"] + 600):
                result = await WORKERS[cfg["mode"]](cfg, conn)
            nursery.cancel_scope.cancel()
        return result

    try:
        conn.send(trio.run(main))
    except BaseExceptionGroup as group:
        # one line for the first failure (say, the server closed a connection
        # with 4429: the scenario sends more than the rate limit allows)
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        reason = first.reason if isinstance(first, trio_websocket.ConnectionClosed) else first
        print(f"load worker: {type(first).__name__}: {reason}", file=sys.stderr)
        raise SystemExit(1) from None


# --- the orchestrator ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_node_modules() -> None:
    """``npm ci`` of bench/node (the ws package) on first use."""
    if not (NODE_DIR / "node_modules" / "ws").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True
        )


def start_server(
    kind: str, port: int, cpus: list[int], extra: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the server under test; ``env``: settings as environment variables (so
    that ``signaling serve`` and the hypercorn factory get the same ones)."""
    if kind == "node-relay":
        ensure_node_modules()
        command = ["node", str(NODE_DIR / "relay.mjs"), str(port)]
    elif kind == "hypercorn":
        command = [
            sys.executable,
            "-m",
            "hypercorn",
            "-k",
            "trio",
            "-c",
            "python:signaling.server.hypercorn_config",
            "--bind",
            f"127.0.0.1:{port}",
            *extra,
            "signaling.server.app:create_app()",
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "signaling",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        # quiet unless the scenario asks for more (steady runs at INFO, as deployed)
        env={**os.environ, "SIGNALING_LOG_LEVEL": "warning", **(env or {})},
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),  # children inherit it
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("server did not start")


class ServerTree:
    """The server process and its children (hypercorn runs its worker in one)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def _all(self) -> list[psutil.Process]:
        return [self.root, *self.root.children(recursive=True)]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self._all())

    def cpu(self) -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in self._all()))

    def wakeups(self) -> int:
        """Voluntary context switches: times the server went idle and was woken."""
        return sum(p.num_ctx_switches().voluntary for p in self._all())


class Steal:
    """The share of this machine's CPU time its host took (``steal`` in /proc/stat)
    between `__init__` and `percent`. On a shared VM that time stalls every
    process at random: a run with much of it says little about the server."""

    def __init__(self) -> None:
        self.before = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        try:
            with open("/proc/stat") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return 0, 0
        # user nice system idle iowait irq softirq steal (guest time is in user)
        return sum(fields[:8]), fields[7] if len(fields) > 7 else 0

    def percent(self) -> float | None:
        total, steal = self._read()
        if total <= self.before[0]:
            return None
        return round(100 * (steal - self.before[1]) / (total - self.before[0]), 1)


def percentile(values: list[int], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def wait_for_worker(
    pipe: Any, procs: list[multiprocessing.Process], timeout: float, doing: str
) -> Any:
    """The next message of a load worker; stop at once, saying so, if any worker died
    (its traceback is above) instead of waiting out ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if pipe.poll(0.2):
            try:
                return pipe.recv()
            except EOFError:
                pass  # it died: say which, below
        for index, process in enumerate(procs):
            process.join(0.1 if not process.is_alive() else 0)
            if not process.is_alive() and process.exitcode not in (0, None):
                raise SystemExit(
                    f"load worker {index} exited with {process.exitcode} while {doing} "
                    "(its error is above)"
                )
        if time.monotonic() > deadline:
            raise SystemExit(f"a load worker was not done {doing} within {timeout:g} s")


def commit() -> str:
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(args: argparse.Namespace) -> dict[str, Any]:
    ncpu = os.cpu_count() or 2
    server_cpus = [0]
    client_cpus = [c for c in range(ncpu) if c not in server_cpus] or [0]
    server = None
    url = args.url
    if url is None:
        port = free_port()
        extra = list(args.server_arg)
        # the same settings for `signaling serve` and the hypercorn factory
        env = {"SIGNALING_MAX_CONNECTIONS_PER_IP": "0"}  # every client comes from 127.0.0.1
        if args.scenario == "saturate":
            env["SIGNALING_RATE_LIMIT"] = "0"  # it floods by design: it measures relaying
        if args.scenario == "steady":
            # issue 13's conditions: every feature on, default rate limits, logs at INFO
            env["SIGNALING_LOG_LEVEL"] = "info"
        if args.cross_node:
            return run_cross_node(args, extra, server_cpus, client_cpus, env)
        server = start_server(args.server, port, server_cpus, extra, env)
        url = f"ws://127.0.0.1:{port}/ws"
    proc = ServerTree(server.pid) if server else None
    baseline = proc.rss() if proc else 0
    try:
        if args.client == "node":
            if args.scenario != "steady":
                raise SystemExit("--client node runs the steady scenario only")
            return run_node_steady(args, url, [proc] if proc else [], client_cpus)
        units = {
            "steady": args.pairs,
            "saturate": args.pairs,
            "idle": args.connections // 2,
            "setup": args.calls,
        }[args.scenario]
        workers = max(1, min(args.workers, units))
        per = [units // workers + (1 if i < units % workers else 0) for i in range(workers)]
        pipes = []
        procs = []
        first = 0
        for i in range(workers):
            cfg = {
                "mode": args.scenario,
                "url": url,
                "first": first,
                "count": per[i],
                "duration": args.duration,
                "worker_rate": args.rate * per[i] / units if args.scenario == "steady" else 0,
                "window": args.window,
                "concurrency": max(1, args.concurrency // workers),
                "cpus": client_cpus,
                "client": args.client,
            }
            first += per[i]
            parent, child = multiprocessing.Pipe()
            p = multiprocessing.Process(target=worker_main, args=(cfg, child), daemon=True)
            p.start()
            pipes.append(parent)
            procs.append(p)
        for parent in pipes:
            assert wait_for_worker(parent, procs, 600, "getting ready") == "ready"
        result: dict[str, Any] = {
            "scenario": args.scenario,
            "commit": commit(),
            "server": args.server if args.url is None else args.url,
            "client": args.client,
            "workers": workers,
        }
        if args.scenario == "idle":
            time.sleep(1.0)  # let the last frames settle before sampling
            if proc:
                rss = proc.rss()
                result["server_rss_mib"] = round(rss / 2**20, 1)
                per_connection = (rss - baseline) / 1024 / args.connections
                result["rss_per_connection_kib"] = round(per_connection, 1)
            result["connections"] = args.connections
            for parent in pipes:
                parent.send("done")
            for parent in pipes:
                parent.recv()
            return result
        cpu_before = proc.cpu() if proc else None
        steal = Steal()
        wall_before = time.perf_counter()
        start_at = time.perf_counter() + 0.5
        for parent in pipes:
            parent.send(start_at)
        outcomes = [
            wait_for_worker(parent, procs, args.duration + 900, "running") for parent in pipes
        ]
        wall = time.perf_counter() - wall_before
        result["steal_percent"] = steal.percent()
        if proc and cpu_before is not None:
            result["server_cpu_percent"] = round(100 * (proc.cpu() - cpu_before) / wall, 1)
            result["server_rss_mib"] = round(proc.rss() / 2**20, 1)
        latencies = [v for o in outcomes for v in o.get("latencies", [])]
        if args.scenario == "setup":
            calls = sum(o["calls"] for o in outcomes)
            result.update(
                calls=calls, setups_per_s=round(calls / wall, 1), concurrency=args.concurrency
            )
            result.update(
                setup_p50_ms=round(percentile(latencies, 0.5), 2),
                setup_p99_ms=round(percentile(latencies, 0.99), 2),
            )
            return result
        sent = sum(o["sent"] for o in outcomes)
        received = sum(o["received"] for o in outcomes)
        errors = sum(o.get("errors", 0) for o in outcomes)
        result.update(
            pairs=args.pairs,
            duration_s=args.duration,
            offered_msgs_per_s=round(sent / args.duration),
            delivered_msgs_per_s=round(received / args.duration),
            sent=sent,
            delivered=received,
            errors=errors,
            p50_ms=round(percentile(latencies, 0.5), 2),
            p99_ms=round(percentile(latencies, 0.99), 2),
            max_ms=round(max(latencies) / 1e6, 2) if latencies else None,
        )
        if args.scenario == "steady":
            result["target_rate"] = args.rate
        else:
            result["window"] = args.window
        return result
    finally:
        if server:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


NODE_DIR = ROOT / "bench" / "node"


def run_cross_node(
    args: argparse.Namespace,
    extra: list[str],
    server_cpus: list[int],
    client_cpus: list[int],
    env: dict[str, str],
) -> dict[str, Any]:
    """``steady --client node --cross-node``: two nodes sharing a Redis of their own,
    every pair split across them, so every relay goes through Redis. The
    nodes' CPU (both, summed) per delivered message is the figure; Redis's
    own CPU is reported beside it."""
    if args.client != "node" or args.scenario != "steady":
        raise SystemExit("--cross-node runs steady with --client node")
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, server_cpus),
    )
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        ports = [free_port(), free_port()]
        redis_url = ["--redis-url", f"redis://127.0.0.1:{redis_port}/0"]
        nodes += [
            start_server("signaling", port, server_cpus, extra + redis_url, env) for port in ports
        ]
        url = ",".join(f"ws://127.0.0.1:{port}/ws" for port in ports)
        redis_tree = ServerTree(redis.pid)
        redis_before = redis_tree.cpu()
        result = run_node_steady(args, url, [ServerTree(n.pid) for n in nodes], client_cpus)
        result["redis_cpu_s"] = round(redis_tree.cpu() - redis_before, 2)
        result["server"] = "two nodes + redis"
        return result
    finally:
        for process in [*nodes, redis]:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def run_node_steady(
    args: argparse.Namespace, url: str, procs: list[ServerTree], cpus: list[int]
) -> dict[str, Any]:
    """``steady`` driven by bench/node/steady.mjs: the many-connections shape.

    Reports what issue 13 measures: µs of server CPU per delivered message and
    the generator's own CPU (over 90% means the generator, not the server, is
    the limit). ``url`` may name two nodes (comma-separated): each pair's
    second connection goes to the second."""
    ensure_node_modules()
    generator = subprocess.Popen(
        [
            "node",
            str(NODE_DIR / "steady.mjs"),
            url,
            str(args.pairs),
            str(args.rate),
            str(args.duration),
            json.dumps(CANDIDATE),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=NODE_DIR,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    assert generator.stdin is not None
    assert generator.stdout is not None
    try:
        if generator.stdout.readline().strip() != "ready":
            raise SystemExit("the node generator did not get ready")
        time.sleep(1.0)  # the joins settle
        cpu_before = sum(p.cpu() for p in procs) if procs else None
        wakeups_before = sum(p.wakeups() for p in procs)
        steal = Steal()
        wall_before = time.perf_counter()
        generator.stdin.write("go\n")
        generator.stdin.flush()
        line = generator.stdout.readline()
        wall = time.perf_counter() - wall_before
        outcome = json.loads(line)
    finally:
        generator.kill()
        generator.wait()
    result: dict[str, Any] = {
        "scenario": "steady",
        "commit": commit(),
        "server": args.server if args.url is None else args.url,
        "client": "node",
        "connections": 2 * args.pairs,
        "target_rate": args.rate,
        "duration_s": args.duration,
        "sent": outcome["sent"],
        "delivered": outcome["received"],
        "errors": outcome["errors"],
        "delivered_msgs_per_s": round(outcome["received"] / args.duration),
        "p50_ms": round(outcome["p50_ms"], 2),
        "p99_ms": round(outcome["p99_ms"], 2),
        "max_ms": round(outcome["max_ms"], 2),
        "generator_cpu_percent": round(outcome["generator_cpu_percent"], 1),
        "stalls": outcome["stalls"],
        "steal_percent": steal.percent(),
    }
    if procs and cpu_before is not None:
        cpu = sum(p.cpu() for p in procs) - cpu_before
        wakeups = sum(p.wakeups() for p in procs) - wakeups_before
        result["server_wakeups_per_msg"] = round(wakeups / max(1, outcome["received"]), 3)
        result["server_cpu_percent"] = round(100 * cpu / wall, 1)
        result["server_us_per_msg"] = round(1e6 * cpu / max(1, outcome["received"]), 1)
        result["server_rss_mib"] = round(sum(p.rss() for p in procs) / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=["steady", "saturate", "idle", "setup"])
    parser.add_argument("--url", help="an already running server's ws:// URL")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument(
        "--server",
        choices=["signaling", "hypercorn", "node-relay"],
        default="signaling",
        help="hypercorn: the ASGI app factory under plain hypercorn (its own /ws path); "
        "node-relay: bench/node/relay.mjs, a plain Node ws relay (steady --client node "
        "only), the floor to compare with",
    )
    parser.add_argument(
        "--client",
        choices=["trio-websocket", "raw", "node"],
        default="trio-websocket",
        help="raw: a minimal client that costs the generator less per message; "
        "node (steady only): Node's ws package, one frame per write, many connections",
    )
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument(
        "--rate", type=float, default=5000, help="steady: messages/s offered in all"
    )
    parser.add_argument(
        "--window", type=int, default=16, help="saturate: messages in flight per user"
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra flag for signaling serve"
    )
    parser.add_argument(
        "--cross-node",
        action="store_true",
        help="steady --client node: two nodes and a Redis, every relay from one to the other",
    )
    parser.add_argument("--output", help="append the JSON line to this file too")
    args = parser.parse_args()
    line = json.dumps(run(args))
    print(line)
    if args.output:
        with open(args.output, "a") as out:
            out.write(line + "\n")


if __name__ == "__main__":
    main()
