"""The app factory on plain hypercorn: /ws through hypercorn's own WebSocket path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from signaling.client import connect
from signaling.errors import NotInSession
from signaling.frames import RelayedOffer, UserJoined, UserLeft
from signaling.server import Hub, create_app
from signaling.server.serve import hypercorn_config

from .conftest import TEST_SETTINGS, chromium_call

CALL = chromium_call()


@pytest.fixture
async def hypercorn_port(nursery: trio.Nursery) -> AsyncIterator[int]:
    settings = TEST_SETTINGS
    app = create_app(settings, hub=Hub(settings))
    stop = trio.Event()
    binds = await nursery.start(
        partial(hypercorn_serve, app, hypercorn_config(settings), shutdown_trigger=stop.wait)
    )
    yield int(binds[0].rsplit(":", 1)[1])
    stop.set()


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_signaling_through_hypercorns_websocket_path(
    hypercorn_port: int, encoding: str
) -> None:
    url = f"ws://127.0.0.1:{hypercorn_port}/ws"
    async with (
        connect(url, user_id="alice", encoding=encoding) as alice,  # type: ignore[arg-type]
        connect(url, user_id="bob") as bob,
    ):
        await alice.join("s")
        assert (await bob.join("s")).participants == ["alice"]
        with trio.fail_after(5):
            assert await alice.receive() == UserJoined(session_id="s", user_id="bob")
            await alice.send_offer("bob", "s", CALL["offer"])
            offer = await bob.receive()
            assert isinstance(offer, RelayedOffer)
            assert offer.from_ == "alice"
            with pytest.raises(NotInSession):
                await bob.leave("elsewhere")
            await bob.close()
            assert await alice.receive() == UserLeft(session_id="s", user_id="bob")


async def test_http_routes_on_hypercorn(hypercorn_port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hypercorn_port}") as http:
        assert (await http.get("/health")).json()["status"] == "ok"
        assert (await http.post("/turn/credentials")).json()["iceServers"]


def test_hypercorn_config_module_replaces_hypercorns_defaults() -> None:
    config = Config.from_object("signaling.server.hypercorn_config")
    defaults = Config()
    assert (defaults.backlog, defaults.websocket_ping_interval) == (100, None)
    assert config.backlog == 4096
    assert config.websocket_max_message_size == 65536
    assert config.websocket_ping_interval == 20.0
    assert config.graceful_timeout == 10.0
    assert config.bind == ["0.0.0.0:3001"]
