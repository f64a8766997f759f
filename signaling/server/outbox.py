"""A connection's bounded outbound queue, drained whole by its writer task."""

from __future__ import annotations

import trio

__all__ = ["Outbox"]


class Outbox:
    """Encoded messages waiting for one connection's writer.

    `put` never blocks: it is called from other connections' reader tasks as
    they route frames. It returns False once the queue holds more than
    ``max_frames`` messages or ``max_bytes`` bytes: the receiver is not
    reading, and the caller disconnects it instead of dropping a frame
    silently. `take` hands the writer everything queued at once, so one
    wake-up and one socket write carry a whole burst.
    """

    __slots__ = (
        "_bytes",
        "_items",
        "_waiter",
        "closed",
        "control",
        "max_bytes",
        "max_frames",
        "oldest",
    )

    def __init__(self, *, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._items: list[bytes] = []
        self._bytes = 0
        self._waiter: trio.lowlevel.Task | None = None
        self.control: list[bytes] = []
        """Transport-level frames (pongs) that go out before queued messages."""
        self.closed = False
        self.oldest = 0.0
        """`trio.current_time` when the oldest queued message was put."""

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting to be written."""
        return self._bytes

    def put(self, message: bytes) -> bool:
        """Queue ``message``; False if the queue is over its bounds (or closed)."""
        if self.closed:
            return False
        if not self._items:
            self.oldest = trio.current_time()
        self._items.append(message)
        self._bytes += len(message)
        self._wake()
        return len(self._items) <= self.max_frames and self._bytes <= self.max_bytes

    def put_control(self, frame: bytes) -> None:
        """Queue a transport control frame."""
        self.control.append(frame)
        self._wake()

    def close(self) -> None:
        """No more messages; wakes the writer so it can finish."""
        self.closed = True
        self._wake()

    def clear(self) -> None:
        """Drop everything queued (the receiver is being disconnected)."""
        self._items = []
        self._bytes = 0

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        # Called synchronously when the writer is cancelled: from here on a
        # put() must not reschedule it a second time.
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    async def take(self) -> list[bytes]:
        """Wait until something is queued or the outbox closes; return all queued."""
        if not self._items and not self.control and not self.closed:
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        items = self._items
        if items:
            self._items = []
            self._bytes = 0
        return items
