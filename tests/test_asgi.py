"""The app factory on plain hypercorn: /ws through hypercorn's own WebSocket path."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from signaling.client import connect
from signaling.errors import NotInSession
from signaling.frames import RelayedOffer, UserJoined, UserLeft
from signaling.server import Hub, Settings, create_app
from signaling.server.serve import hypercorn_config

from .conftest import TEST_SETTINGS, chromium_call
from .test_exposure import close_code, masked

CALL = chromium_call()


@asynccontextmanager
async def plain_hypercorn(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[int]:
    """The app factory served by hypercorn itself (no front door); yields the port."""
    app = create_app(settings, hub=Hub(settings))
    stop = trio.Event()
    binds = await nursery.start(
        partial(hypercorn_serve, app, hypercorn_config(settings), shutdown_trigger=stop.wait)
    )
    yield int(binds[0].rsplit(":", 1)[1])
    stop.set()


@pytest.fixture
async def hypercorn_port(nursery: trio.Nursery) -> AsyncIterator[int]:
    async with plain_hypercorn(nursery, TEST_SETTINGS) as port:
        yield port


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
        assert (await http.get("/ws")).status_code == 426  # beside the WebSocket route
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


QUICK = TEST_SETTINGS.replace(ping_interval=0.5, ping_timeout=1.0)


@pytest.fixture
async def quick_hypercorn_port(nursery: trio.Nursery) -> AsyncIterator[int]:
    async with plain_hypercorn(nursery, QUICK) as port:
        yield port


async def _raw_upgrade(port: int) -> tuple[trio.SocketStream, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    head = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
    return stream, head


async def test_hypercorns_path_negotiates_no_compression(hypercorn_port: int) -> None:
    """Hypercorn would inflate without a bound: on this path nothing is compressed, and
    a compressed frame is a protocol error. Twenty times over: the refusal races
    hypercorn's first ping, which used to crash the whole server."""
    for _ in range(20):
        stream, head = await _raw_upgrade(hypercorn_port)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"sec-websocket-extensions" not in head.lower()
        await stream.send_all(b"\xc1\x84\0\0\0\0" + b"abcd")  # RSV1 set, masked, 4 bytes
        data = head
        with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):
            while chunk := await stream.receive_some(4096):  # until closed (or reset)
                data += chunk
        # wsproto refuses it (RSV1 with nothing negotiated); hypercorn drops the connection
        assert close_code(data) in (1002, None)
        await stream.aclose()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hypercorn_port}") as http:
        assert (await http.get("/health")).json()["status"] == "ok"


async def test_a_silent_client_on_hypercorns_path_times_out(quick_hypercorn_port: int) -> None:
    stream, _ = await _raw_upgrade(quick_hypercorn_port)
    await stream.send_all(masked(1, b'{"type": "auth", "userId": "quiet"}'))
    data = b""
    started = trio.current_time()
    with trio.fail_after(5):
        while chunk := await stream.receive_some(4096):
            data += chunk
    # it read the pings, answered none: closed after ping interval + timeout
    assert close_code(data) == 4408
    assert 1.0 < trio.current_time() - started < 4
    await stream.aclose()


async def test_a_client_answering_pings_on_hypercorns_path_stays(quick_hypercorn_port: int) -> None:
    url = f"ws://127.0.0.1:{quick_hypercorn_port}/ws"
    async with connect(url, user_id="idle") as idle:
        await trio.sleep(3.5)  # seven ping intervals, nothing sent but pongs
        assert (await idle.join("still-here")).participants == []
