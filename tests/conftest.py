"""Shared fixtures: a live server on 127.0.0.1 (ephemeral port) and helpers."""

from __future__ import annotations

import json
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
