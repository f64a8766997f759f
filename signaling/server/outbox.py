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

    Transport control frames (pings, Engine.IO packets) count against the
    same bounds (`put_control`). A pong is kept apart: only the newest one
    waits (`put_pong`), as RFC 6455 §5.5.3 allows, so a client that floods
    pings and reads nothing queues one pong, not millions.
    """

    __slots__ = (
        "_bytes",
        "_control_bytes",
        "_items",
        "_waiter",
        "closed",
        "control",
        "max_bytes",
        "max_frames",
        "oldest",
        "pong",
    )

    def __init__(self, *, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._items: list[bytes] = []
        self._bytes = 0
        self._control_bytes = 0
        self._waiter: trio.lowlevel.Task | None = None
        self.control: list[bytes] = []
        """Transport-level frames that go out before queued messages."""
        self.pong: bytes | None = None
        """The pong answering the newest ping, if not sent yet."""
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

    def put_control(self, frame: bytes) -> bool:
        """Queue a transport control frame; False (as `put`) once over the bounds."""
        if self.closed:
            return False
        self.control.append(frame)
        self._control_bytes += len(frame)
        self._wake()
        return (
            len(self._items) + len(self.control) <= self.max_frames
            and self._bytes + self._control_bytes <= self.max_bytes
        )

    def put_pong(self, frame: bytes) -> None:
        """Queue a pong in place of any pong still waiting."""
        self.pong = frame
        self._wake()

    def take_control(self) -> list[bytes]:
        """The control frames queued (the pong last), for the writer."""
        control = self.control
        if control:
            self.control = []
            self._control_bytes = 0
        if self.pong is not None:
            control.append(self.pong)
            self.pong = None
        return control

    def idle(self) -> bool:
        """Nothing is queued, messages or control frames: a frame may be written
        at once without overtaking any."""
        return not self._items and not self.control and self.pong is None

    def close(self) -> None:
        """No more messages; wakes the writer so it can finish."""
        self.closed = True
        self._wake()

    def take_unsent(self) -> list[bytes]:
        """Take the messages queued and not yet taken by the writer (control
        frames stay: they belong to this connection's transport)."""
        items = self._items
        self._items = []
        self._bytes = 0
        return items

    def clear(self) -> None:
        """Drop everything queued (the receiver is being disconnected)."""
        self._items = []
        self.control = []
        self.pong = None
        self._bytes = 0
        self._control_bytes = 0

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
        if self.idle() and not self.closed:
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        items = self._items
        if items:
            self._items = []
            self._bytes = 0
        return items
