"""Shared fixtures: a live server on 127.0.0.1 (ephemeral port) and helpers."""

from __future__ import annotations

import json
import queue
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from signaling.client import Client, connect
from signaling.server import Hub, Settings, serve
from signaling.server.memory import MemoryListener

SYSTEM_MODULES = {
    "test_browser",  # chromium
    "test_coturn",  # coturn
    "test_sticky",  # nginx
    "test_docs",  # ./dev serve on port 3001 and the benchmarks
    "test_exposure",  # ss (iproute2) and a real process under attack
    "test_memory",
}
SYSTEM_FIXTURES = {"redis_server", "redis_url", "node_modules"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs the Debian packages (or npm's clients): ``./dev check`` skips it."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""  # type: ignore[attr-defined]
        fixtures = set(getattr(item, "fixturenames", ()))
        if module in SYSTEM_MODULES or fixtures & SYSTEM_FIXTURES:
            item.add_marker(pytest.mark.system)


CHROMIUM_CALL = Path(__file__).resolve().parent / "fixtures" / "chromium-call.json"
"""A real Chromium call's offer, answer and candidates (tests/fixtures/README.md)."""


SOCKETIO_DIR = Path(__file__).resolve().parent / "socketio"
"""The real socket.io-client (npm, pinned by package-lock.json) and the scripts that drive it."""


def chromium_call() -> dict[str, Any]:
    """The offer/answer/candidates of `CHROMIUM_CALL`."""
    data: dict[str, Any] = json.loads(CHROMIUM_CALL.read_text())
    return data


@dataclass
class Server:
    """A running server: its port (or in-memory listener), hub and ``/ws`` URL."""

    port: int
    hub: Hub
    stop: trio.Event
    listener: MemoryListener | None = None
    """Set when the server listens in memory (`memory_server`) instead of on TCP."""

    @property
    def url(self) -> str:
        if self.listener is not None:
            return "ws://memory/ws"  # the host is a name only: open_stream ignores it
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open_stream(self) -> trio.SocketStream:
        """A new byte stream to the server."""
        if self.listener is not None:
            return await self.listener.connect()
        return await trio.open_tcp_stream("127.0.0.1", self.port)

    def connect(self, **options: Any) -> AbstractAsyncContextManager[Client]:
        """The SDK's `connect` to this server (TCP or in memory)."""
        if self.listener is not None:
            options.setdefault("open_stream", self.listener.connect)
        return connect(self.url, **options)

    @asynccontextmanager
    async def websocket(
        self, subprotocols: list[str] | None = None, resource: str = "/ws"
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """A bare trio-websocket connection to the server (its stream via `open_stream`)."""
        async with trio.open_nursery() as nursery:
            stream = await self.open_stream()
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, "127.0.0.1", resource, subprotocols=subprotocols
            )
            try:
                yield ws
            finally:
                await ws.aclose()


TEST_SETTINGS = Settings(host="127.0.0.1", port=0, graceful_timeout=5.0, rate_limit=0)
"""Rate limiting is off here; the tests of rate limits turn it on."""


@pytest.fixture(params=["json", "msgpack"])
def encoding(request: pytest.FixtureRequest) -> str:
    """Each test that asks for it runs once per encoding (protocol/SPEC.md §1)."""
    return str(request.param)


@pytest.fixture
def settings() -> Settings:
    """Settings for the server fixture; override in a module to change them."""
    return TEST_SETTINGS


async def start_server(
    nursery: trio.Nursery, settings: Settings, *, memory: bool = False
) -> Server:
    """Our server on an ephemeral port of 127.0.0.1 (or, with ``memory``, on a
    `MemoryListener`: no port at all), running in ``nursery``."""
    hub = Hub(settings)
    stop = trio.Event()
    listener = MemoryListener() if memory else None
    port = await nursery.start(
        partial(
            serve,
            settings,
            hub=hub,
            shutdown_trigger=stop.wait,
            listeners=None if listener is None else [listener],
        )
    )
    return Server(port, hub, stop, listener)


@contextmanager
def server_in_thread(settings: Settings) -> Iterator[tuple[int, Hub]]:
    """Our server in a thread of its own, for tests that run a fresh ``trio.run`` per
    hypothesis example (a server in the test's own run would end with each one)."""
    hub = Hub(settings)
    started: queue.Queue[tuple[int, trio.lowlevel.TrioToken]] = queue.Queue()
    stop = trio.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve, settings, hub=hub, shutdown_trigger=stop.wait)
            )
            started.put((port, trio.lowlevel.current_trio_token()))

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    port, token = started.get(timeout=30)
    try:
        yield port, hub
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(timeout=30)
    assert not thread.is_alive()


async def serve_app(nursery: trio.Nursery, app: Any) -> tuple[str, trio.Event]:
    """Serve an ASGI app (a test's stand-in for a third-party service) on 127.0.0.1."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    binds = await nursery.start(partial(hypercorn_serve, app, config, shutdown_trigger=stop.wait))
    return binds[0], stop


@pytest.fixture
async def server(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[Server]:
    """A server on an ephemeral port of 127.0.0.1, shut down after the test."""
    running = await start_server(nursery, settings)
    yield running
    running.stop.set()


@pytest.fixture
async def memory_server(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[Server]:
    """A server on a `MemoryListener`: no port, no network; the protocol suite's."""
    running = await start_server(nursery, settings, memory=True)
    yield running
    running.stop.set()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_argv(port: int, folder: Path) -> list[str]:
    """A throw-away redis-server on 127.0.0.1:``port``: nothing saved, files in ``folder``."""
    return [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
    ]


class RedisServer:
    """A redis-server of the test's own, which the test may stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        assert shutil.which("redis-server"), "redis-server is missing: ./dev test installs it"
        self.process = await trio.lowlevel.open_process(
            redis_argv(self.port, self.folder),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with trio.fail_after(10):
            while True:
                try:
                    probe = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                await probe.send_all(b"PING\r\n")
                answer = await probe.receive_some(64)
                await probe.aclose()
                if answer.startswith(b"+PONG"):
                    return

    async def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            await self.process.wait()
            self.process = None


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server on a free port, removed after the test."""
    server = RedisServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of `redis_server`."""
    return redis_server.url


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """``npm ci`` of the pinned socket.io-client (tests/socketio/package-lock.json)."""
    assert shutil.which("node"), "Node.js is needed"
    assert shutil.which("npm"), "npm is needed"
    if not (SOCKETIO_DIR / "node_modules" / "socket.io-client").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=SOCKETIO_DIR,
            check=True,
            timeout=300,
        )
    return SOCKETIO_DIR / "node_modules"
