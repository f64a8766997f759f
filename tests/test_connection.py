"""The connection shell over an in-memory stream: batching and closing."""

from __future__ import annotations

import trio
import trio.testing
from wsproto.frame_protocol import FrameProtocol, Opcode

from signaling.codec import CLIENT_CODECS, JSON_SUBPROTOCOL
from signaling.frames import UserJoined
from signaling.server import Hub
from signaling.server.transports.ws import LeanTransport

from .conftest import TEST_SETTINGS


class CountingStream(trio.abc.HalfCloseableStream):
    """Wraps a stream and records each send_all call."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_frames_queued_in_one_tick_go_out_in_one_write() -> None:
    server_side, _client_side = trio.testing.memory_stream_pair()
    stream = CountingStream(server_side)
    hub = Hub(TEST_SETTINGS)
    codec = CLIENT_CODECS[JSON_SUBPROTOCOL]
    transport = LeanTransport(stream, text=True, max_message=65536, pending=b"")
    connection = hub.open(transport, codec, "memory", "memory")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(100):
            connection.deliver(UserJoined(session_id="s", user_id=f"u{n}"))
        await trio.testing.wait_all_tasks_blocked()
        assert len(stream.writes) == 1
        client = FrameProtocol(client=True, extensions=[])
        client.receive_bytes(stream.writes[0])
        frames = list(client.received_frames())
        assert [f.opcode for f in frames] == [Opcode.TEXT] * 100
        assert frames[99].payload == '{"type":"user-joined","sessionId":"s","userId":"u99"}'
        connection.close(1001, "bye")
        await trio.testing.wait_all_tasks_blocked()
        assert len(stream.writes) == 2  # the close frame
        nursery.cancel_scope.cancel()


async def test_a_connection_closed_before_it_runs_still_ends_within_the_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Closed before its tasks started (a drain racing an accept): the close deadline
    applies from the start, not the auth timeout of a client that never speaks."""
    from signaling.server.connection import CLOSE_TIMEOUT

    server_side, _client_side = trio.testing.memory_stream_pair()
    hub = Hub(TEST_SETTINGS.replace(auth_timeout=60))
    transport = LeanTransport(server_side, text=True, max_message=65536, pending=b"")
    connection = hub.open(transport, CLIENT_CODECS[JSON_SUBPROTOCOL], "memory", "memory")
    connection.close(1001, "going away")
    start = trio.current_time()
    with trio.fail_after(CLOSE_TIMEOUT + 1):  # it used to drain for ever
        await connection.run()
    assert trio.current_time() - start <= CLOSE_TIMEOUT
