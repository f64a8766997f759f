"""The outbox between reader tasks and a connection's writer."""

from __future__ import annotations

import trio
import trio.testing

from signaling.server.outbox import Outbox


async def test_take_returns_everything_queued_at_once() -> None:
    outbox = Outbox(max_frames=10, max_bytes=100)
    assert outbox.put(b"a")
    assert outbox.put(b"bc")
    assert outbox.queued_bytes == 3
    assert await outbox.take() == [b"a", b"bc"]
    assert outbox.queued_bytes == 0


async def test_put_wakes_a_waiting_writer() -> None:
    outbox = Outbox(max_frames=10, max_bytes=100)
    got: list[list[bytes]] = []
    async with trio.open_nursery() as nursery:

        async def writer() -> None:
            got.append(await outbox.take())

        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        outbox.put(b"x")
    assert got == [[b"x"]]


async def test_over_either_bound_is_reported() -> None:
    outbox = Outbox(max_frames=2, max_bytes=10)
    assert outbox.put(b"12345")
    assert outbox.put(b"12345")
    assert not outbox.put(b"1")  # three frames
    outbox.clear()
    assert not outbox.put(b"x" * 11)  # eleven bytes


async def test_put_right_after_the_writer_is_cancelled_does_not_reschedule_it_twice() -> None:
    # Regression: a put() between the writer's cancellation and its resumption
    # rescheduled it again and crashed the run loop.
    outbox = Outbox(max_frames=10, max_bytes=100)
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def writer() -> None:
            with scope:
                await outbox.take()

        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        assert outbox.put(b"late")
    assert scope.cancelled_caught
    assert await outbox.take() == [b"late"]


async def test_close_wakes_the_writer_with_nothing() -> None:
    outbox = Outbox(max_frames=10, max_bytes=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.take)
        await trio.testing.wait_all_tasks_blocked()
        outbox.close()
    assert not outbox.put(b"after close")
