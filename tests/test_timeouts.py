"""Timeouts under trio's MockClock: connections over in-memory streams, no real I/O."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing
from wsproto.frame_protocol import FrameProtocol, Opcode

from signaling.codec import CLIENT_CODECS, JSON_SUBPROTOCOL
from signaling.server import Hub
from signaling.server.transports.ws import LeanTransport

from .conftest import TEST_SETTINGS

SETTINGS = TEST_SETTINGS.replace(auth_timeout=10.0, ping_interval=20.0, ping_timeout=10.0)


class MemoryClient:
    """The client end of an in-memory connection, speaking raw RFC 6455."""

    def __init__(self, hub: Hub, nursery: trio.Nursery) -> None:
        server_end, self.stream = trio.testing.memory_stream_pair()
        self.frames = FrameProtocol(client=True, extensions=[])
        transport = LeanTransport(server_end, text=True, max_message=65536, pending=b"")
        nursery.start_soon(
            hub.serve_connection, transport, CLIENT_CODECS[JSON_SUBPROTOCOL], "mem", "mem"
        )

    async def send(self, frame: dict[str, Any]) -> None:
        await self.stream.send_all(bytes(self.frames.send_data(json.dumps(frame), fin=True)))

    async def receive(self) -> tuple[str, Any]:
        """The next ("text", frame) or ("close", code); pings are answered."""
        while True:
            for event in self.frames.received_frames():
                payload = event.payload
                if event.opcode is Opcode.TEXT:
                    assert isinstance(payload, str)
                    return "text", json.loads(payload)
                if event.opcode is Opcode.CLOSE:
                    assert isinstance(payload, tuple)
                    return "close", payload[0]
                if event.opcode is Opcode.PING:
                    assert isinstance(payload, bytes)
                    await self.stream.send_all(bytes(self.frames.pong(payload)))
            data = await self.stream.receive_some()
            if not data:
                return "eof", None
            self.frames.receive_bytes(bytes(data))


async def test_no_auth_within_the_timeout_closes_4408(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Hub(SETTINGS)
    async with trio.open_nursery() as nursery:
        client = MemoryClient(hub, nursery)
        start = trio.current_time()
        assert await client.receive() == ("close", 4408)
        assert trio.current_time() - start == SETTINGS.auth_timeout
        await client.stream.aclose()
    assert not hub.connections


async def test_auth_just_in_time_is_accepted(autojump_clock: trio.testing.MockClock) -> None:
    hub = Hub(SETTINGS)
    async with trio.open_nursery() as nursery:
        client = MemoryClient(hub, nursery)
        await trio.sleep(SETTINGS.auth_timeout - 0.01)
        await client.send({"type": "auth", "userId": "alice"})
        kind, frame = await client.receive()
        assert (kind, frame["type"]) == ("text", "welcome")
        nursery.cancel_scope.cancel()


async def test_half_open_connection_is_closed_and_user_left_sent_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Hub(SETTINGS)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.serve_heartbeat)
        await nursery.start(hub.serve_resumes)
        alice = MemoryClient(hub, nursery)
        ghost = MemoryClient(hub, nursery)
        for client, user in ((alice, "alice"), (ghost, "ghost")):
            await client.send({"type": "auth", "userId": user})
            await client.send({"type": "join-session", "sessionId": "s"})
            assert (await client.receive())[1]["type"] == "welcome"
            assert (await client.receive())[1]["type"] == "session-joined"
        assert (await alice.receive())[1] == {
            "type": "user-joined",
            "sessionId": "s",
            "userId": "ghost",
        }
        went_silent = trio.current_time()
        # ghost never reads nor writes again (its peer vanished); alice answers pings
        assert await alice.receive() == (
            "text",
            {"type": "user-left", "sessionId": "s", "userId": "ghost"},
        )
        # gone within ping interval + timeout (checked every quarter of the shorter
        # one), then its seat waited the resume window for it (protocol/SPEC.md §10)
        silent_for = trio.current_time() - went_silent - SETTINGS.resume_window
        limit = SETTINGS.ping_interval + SETTINGS.ping_timeout
        assert limit - SETTINGS.ping_timeout / 4 <= silent_for <= limit
        # alice, answering pings, stays connected and hears nothing more about ghost
        heard: list[tuple[str, Any]] = []

        async def listen() -> None:
            while True:
                heard.append(await alice.receive())

        nursery.start_soon(listen)
        await trio.sleep(5 * SETTINGS.ping_interval)
        assert [c.user_id for c in hub.connections] == ["alice"]
        assert heard == []
        nursery.cancel_scope.cancel()


class _Steps(trio.abc.Instrument):
    """Counts the steps of one task."""

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_the_heartbeat_checks_many_connections_in_slices(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A heartbeat over 1,200 connections yields twice (every HEARTBEAT_SLICE) so
    that relays are not held up for the whole loop."""
    from signaling.server.hub import HEARTBEAT_SLICE

    hub = Hub(SETTINGS)
    steps = _Steps()
    pinged_in_step: list[int] = []
    all_pinged = trio.Event()

    class Idle:
        def __init__(self) -> None:
            self.close_code = None
            self.pinged_at = -1e9
            self.transport = self
            self.last_activity = trio.current_time()

        def ping(self) -> None:
            pinged_in_step.append(steps.steps)
            if len(pinged_in_step) == 1200:
                all_pinged.set()

        def expire(self, wall: float) -> None:
            pass

    hub.connections.update(Idle() for _ in range(1200))  # type: ignore[misc]
    trio.lowlevel.add_instrument(steps)
    try:
        async with trio.open_nursery() as nursery:
            steps.task = await nursery.start(_heartbeat_task, hub)
            with trio.fail_after(SETTINGS.ping_interval * 2):
                await all_pinged.wait()
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert len(set(pinged_in_step)) == 1200 // HEARTBEAT_SLICE + 1


async def _heartbeat_task(hub: Hub, task_status: trio.TaskStatus[trio.lowlevel.Task]) -> None:
    task_status.started(trio.lowlevel.current_task())
    await hub.serve_heartbeat()
