"""Shared fixtures: a live server on 127.0.0.1 (ephemeral port) and helpers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from signaling.server import Hub, Settings, serve

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
LOCAL_FIXTURES = Path(__file__).resolve().parent / "fixtures"


def chromium_call() -> dict[str, Any]:
    """The real Chromium offer/answer/candidates (../shared/fixtures, or a copy in tests/)."""
    for folder in (FIXTURES, LOCAL_FIXTURES):
        path = folder / "chromium-call.json"
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
    raise FileNotFoundError("chromium-call.json not found in ../shared/fixtures or tests/fixtures")


@dataclass
class Server:
    """A running server: its port, hub and ``/ws`` URL."""

    port: int
    hub: Hub
    stop: trio.Event

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


TEST_SETTINGS = Settings(host="127.0.0.1", port=0, graceful_timeout=5.0, rate_limit=0)
"""Rate limiting is off here; the tests of rate limits turn it on."""


@pytest.fixture
def settings() -> Settings:
    """Settings for the server fixture; override in a module to change them."""
    return TEST_SETTINGS


@pytest.fixture
async def server(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[Server]:
    """A server on an ephemeral port of 127.0.0.1, shut down after the test."""
    hub = Hub(settings)
    stop = trio.Event()
    port = await nursery.start(partial(serve, settings, hub=hub, shutdown_trigger=stop.wait))
    yield Server(port, hub, stop)
    stop.set()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    """A redis-server of its own on a free port, removed after the test."""
    assert shutil.which("redis-server"), "redis-server is missing: ./dev test installs it"
    port = _free_port()
    process = await trio.lowlevel.open_process(
        [
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
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(10):
            while True:
                try:
                    probe = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                await probe.send_all(b"PING\r\n")
                if (await probe.receive_some(64)).startswith(b"+PONG"):
                    await probe.aclose()
                    break
                await probe.aclose()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        process.kill()
