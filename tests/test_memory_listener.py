"""The in-process listener (`signaling.server.memory`) and the SDK's ``open_stream``."""

from __future__ import annotations

import pytest
import trio

from signaling.client import ConnectionFailed, connect
from signaling.frames import UserJoined
from signaling.server.memory import MemoryListener

from .conftest import Server


async def test_a_connection_is_a_pair_of_connected_streams() -> None:
    listener = MemoryListener()
    client = await listener.connect()
    server = await listener.accept()
    await client.send_all(b"ping")
    assert await server.receive_some(4) == b"ping"
    await server.send_all(b"pong")
    assert await client.receive_some(4) == b"pong"
    await server.aclose()
    assert await client.receive_some(4) == b""  # EOF, as over TCP
    await client.aclose()
    await listener.aclose()


async def test_connect_waits_while_the_backlog_is_full() -> None:
    listener = MemoryListener(backlog=1)
    first = await listener.connect()
    with trio.move_on_after(0.05) as waited:
        await listener.connect()
    assert waited.cancelled_caught
    accepted = await listener.accept()
    second = await listener.connect()  # room again
    await listener.aclose()
    for stream in (first, accepted, second):
        await stream.aclose()


async def test_after_aclose_connect_is_refused_and_the_unaccepted_see_eof() -> None:
    listener = MemoryListener()
    waiting = await listener.connect()
    await listener.aclose()
    await listener.aclose()  # trio.serve_listeners closes it too: twice is fine
    assert await waiting.receive_some(4) == b""
    with pytest.raises(ConnectionRefusedError):
        await listener.connect()
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()
    await waiting.aclose()


async def test_the_server_serves_a_memory_listener_with_no_port(memory_server: Server) -> None:
    assert memory_server.port == 0
    async with (
        memory_server.connect(user_id="alice") as alice,
        memory_server.connect(user_id="bob", encoding="msgpack") as bob,
    ):
        await alice.join("s")
        await bob.join("s")
        with trio.fail_after(5):
            assert await alice.receive() == UserJoined(session_id="s", user_id="bob")
        (connection,) = [c for c in memory_server.hub.connections if c.user_id == "bob"]
        assert connection.ip == "local"  # a Unix socket has no address: said so, not "?"


async def test_the_sdk_reports_a_refused_open_stream_as_connection_failed() -> None:
    listener = MemoryListener()
    await listener.aclose()
    with pytest.raises(ConnectionFailed, match="cannot connect to memory:80"):
        async with connect("ws://memory/ws", user_id="alice", open_stream=listener.connect):
            pass  # pragma: no cover


async def test_http_routes_answer_on_a_memory_listener(memory_server: Server) -> None:
    stream = await memory_server.open_stream()
    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: memory\r\nConnection: close\r\n\r\n")
    answer = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(4096):
            answer += chunk
    await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"status":"ok"' in answer.replace(b" ", b"")
