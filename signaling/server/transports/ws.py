"""The ``/ws`` WebSocket transport: the one module that owns its socket I/O.

The realistic load is thousands of connections, each sending a frame now and
then, so nearly every frame is read, routed and written alone. Measured that
way (bench/RESULTS.md), the cost of a relayed message was mostly trio's
per-operation machinery, not our code; each trick below removes a piece of
it, on plain TCP connections only (over TLS or with permessage-deflate the
transport goes through the trio stream as before):

- **Reads without a task switch** (`Reactor`). A connection's reader task
  used to wake for every frame: trio re-arms a one-shot epoll registration
  (an ``epoll_ctl``) for every ``wait_readable`` and resumes the task through
  five coroutine frames. Instead, once a connection is authenticated, its
  socket sits in one level-triggered epoll set that a single system task
  watches; when it is readable the reactor calls `LeanTransport.readable`,
  which reads, parses, and hands the messages to the connection's ``inline``
  consumer right there. The consumer applies every frame that needs no
  ``await`` (signals, leave, connection state: all synchronous in the core)
  and returns the rest; only then, or at EOF, a close frame or an error, is
  the reader task woken. Each ready socket gets one ``recv`` per round
  (level-triggered: what is left is reported again), so a busy client
  cannot starve the others, and the reactor yields to trio after every
  round.
- **Reads in task mode** (before auth, during a join's ``await``, while
  closing) wait with `trio.lowlevel.wait_readable` and call the socket's own
  non-blocking ``recv`` (`signaling.server.rawsocket`): one syscall per
  arrival, without ``receive_some``'s machinery.
- **Writes from the routing task** (`LeanTransport.send_now`): a message is
  written straight from the task that routed it when nothing is queued or
  being written here; the writer task only wakes for what the socket did not
  take (``EAGAIN`` or a partial write), so the common relay costs one
  ``send`` and no task switch.
"""

from __future__ import annotations

import contextlib
import logging
import select
from typing import TYPE_CHECKING

import outcome
import trio

from .. import rawsocket
from ..websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Deflate,
    FrameParser,
    close_frame,
    encode_frames,
    frame,
    parse_close,
)

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from ..outbox import Outbox

__all__ = ["RECEIVE_SIZE", "LeanTransport", "Reactor"]

RECEIVE_SIZE = 65536
"""Bytes one read takes at most."""

Message = tuple[bool, "bytes | str"]
"""One WebSocket message: ``(is_text, payload)``."""

log = logging.getLogger("signaling.transport")

_EVENTS_PER_ROUND = 256
"""Ready sockets the reactor serves before it yields to trio again."""


class Reactor:
    """One level-triggered epoll set for the sockets of parked reader tasks.

    A system task (started on first use, one per trio run) waits for the set
    to be readable and calls `LeanTransport.readable` for each ready socket.
    It never raises: `readable` hands any error to the connection's own task.
    """

    _current: trio.lowlevel.RunVar[Reactor] = trio.lowlevel.RunVar("signaling_reactor")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watched: dict[int, LeanTransport] = {}
        self.after_round: list[Callable[[float], None]] = []
        """Called with the time after every round (the cluster's flusher uses it as
        a clock that costs nothing while traffic flows; see `signaling.server.cluster`)."""

    @classmethod
    def current(cls) -> Reactor:
        """This trio run's reactor, started on first use."""
        try:
            return cls._current.get()
        except LookupError:
            reactor = cls()
            cls._current.set(reactor)
            trio.lowlevel.spawn_system_task(reactor._run, name="signaling reactor")
            return reactor

    def __len__(self) -> int:
        return len(self._watched)

    def watch(self, fd: int, transport: LeanTransport) -> None:
        """Call ``transport.readable(now)`` whenever ``fd`` has something to read."""
        self._epoll.register(fd, select.EPOLLIN)
        self._watched[fd] = transport

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (a no-op if it is not watched)."""
        if self._watched.pop(fd, None) is not None:
            with contextlib.suppress(OSError):  # closed already: the kernel dropped it
                self._epoll.unregister(fd)

    async def _run(self) -> None:
        epoll = self._epoll
        watched = self._watched
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                # one clock reading a round, not one per message: trio's clock
                # costs three calls, and a round lasts a millisecond or so
                now = trio.current_time()
                for fd, _ in epoll.poll(0, _EVENTS_PER_ROUND):
                    transport = watched.get(fd)
                    if transport is None:
                        continue
                    try:
                        transport.readable(now)
                    except Exception:
                        # a bug, not a client: it must not end every other connection
                        log.exception("reading a connection failed; it is no longer watched")
                        self.unwatch(fd)
                if self.after_round:
                    now = trio.current_time()
                    for hook in self.after_round:
                        try:
                            hook(now)
                        except Exception:
                            log.exception("an after-round hook failed")
        finally:
            epoll.close()


class LeanTransport:
    """`signaling.server.transports.base.Transport` over a raw trio stream (see the module)."""

    __slots__ = (
        "_deflate",
        "_opcode",
        "_parked",
        "_parser",
        "_pending",
        "_reactor",
        "_sock",
        "closed",
        "direct",
        "inline",
        "last_activity",
        "outbox",
        "peer_close",
        "stream",
        "writing",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        text: bool,
        max_message: int,
        pending: bytes,
        deflate: Deflate | None = None,
    ) -> None:
        self.stream = stream
        self._opcode = OP_TEXT if text else OP_BINARY
        self._parser = FrameParser(max_message, deflate=deflate is not None)
        self._deflate = deflate
        self._pending = pending
        self.peer_close: tuple[int, str] | None = None
        self.last_activity = trio.current_time()
        self.outbox: Outbox | None = None
        """Set by the connection: where pongs and pings are queued."""
        self.closed: trio.Event | None = None
        """Set on `aclose`, for a handler that must outlive its hand-over (Engine.IO)."""
        self.writing = False
        """The writer task is in the middle of a write: `send_now` must not cut in."""
        self.inline: Callable[[list[Message], float], list[Message]] | None = None
        """Set by the connection: applies what it can of a batch (read at the
        time given) without an await and returns the rest. While set,
        `receive` lets the reactor read."""
        self._sock = None if deflate is not None else rawsocket.stdlib_socket(stream)
        self.direct = self._sock is not None
        """`send_now` can write on its own (a plain socket; not while `writing`)."""
        self._reactor = Reactor.current() if self._sock is not None else None
        self._parked: trio.lowlevel.Task | None = None
        """The reader task, while the reactor reads for it."""

    def ping(self) -> None:
        """Queue a ping; the client's pong refreshes `last_activity`."""
        if self.outbox is not None:
            self.outbox.put_control(frame(OP_PING, b""))

    async def receive(self) -> list[Message] | None:
        """The next complete messages; None after the client's close frame or EOF.

        With `inline` set, the messages it applied never come back here: this
        returns what it left (its first needs an ``await``), or None.
        """
        if self.peer_close is not None:
            return None
        while True:
            data: bytes | bytearray
            if self._pending:
                data, self._pending = self._pending, b""
            else:
                sock = self._sock
                if sock is not None:
                    if self.inline is not None:
                        return await self._park(sock)
                    data = await rawsocket.receive(sock, RECEIVE_SIZE)
                else:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                if not data:
                    return None
                self.last_activity = trio.current_time()
            messages = self._messages(data)
            if messages or self.peer_close is not None:
                return messages or None

    def _messages(self, data: bytes | bytearray) -> list[Message]:
        """Parse ``data``: its messages, control frames answered (raises `ProtocolError`)."""
        messages: list[Message] = []
        for opcode, payload in self._parser.feed(data):
            if opcode == OP_TEXT:
                messages.append((True, payload))
            elif opcode == OP_BINARY:
                messages.append((False, payload))
            elif opcode == OP_PING:
                if self.outbox is not None:
                    self.outbox.put_pong(frame(OP_PONG, payload))  # type: ignore[arg-type]
            elif opcode == OP_CLOSE:
                self.peer_close = parse_close(payload)  # type: ignore[arg-type]
                break
        return messages

    async def _park(self, sock: socket.socket) -> list[Message] | None:
        """Let the reactor read until `readable` wakes this task with a result."""
        reactor = self._reactor
        assert reactor is not None
        fd = sock.fileno()
        reactor.watch(fd, self)
        self._parked = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._parked = None
            reactor.unwatch(fd)
            return trio.lowlevel.Abort.SUCCEEDED

        result: list[Message] | None = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    def readable(self, now: float) -> None:
        """The reactor saw the socket readable at ``now``: read once and apply what
        can be inline.

        The reader task is woken (and the socket leaves the reactor) with what
        `inline` left, with None at EOF or after the client's close frame, or
        with the error; every exception goes to that task, none to the reactor.
        """
        assert self._sock is not None
        try:
            data = rawsocket.receive_now(self._sock, RECEIVE_SIZE)
        except trio.BrokenResourceError as exc:
            self._wake(outcome.Error(exc))
            return
        if data is None:
            return
        if not data:
            self._wake(outcome.Value(None))
            return
        self.last_activity = now
        try:
            messages = self._messages(data)
            consumer = self.inline
            rest = consumer(messages, now) if consumer is not None and messages else messages
        except Exception as exc:
            self._wake(outcome.Error(exc))
            return
        if rest:
            self._wake(outcome.Value(rest))
        elif self.peer_close is not None:
            self._wake(outcome.Value(None))

    def _wake(self, result: outcome.Outcome[list[Message] | None]) -> None:
        task = self._parked
        if task is None:
            return
        self._parked = None
        assert self._reactor is not None
        assert self._sock is not None
        self._reactor.unwatch(self._sock.fileno())
        trio.lowlevel.reschedule(task, result)

    def send_now(self, message: bytes) -> bytes | None:
        """Write ``message`` at once if the socket takes it all: None. Otherwise the
        framed bytes it did not take, which the caller queues ahead of anything else.

        Only when nothing is queued or being written (the caller checks the
        outbox; `writing` covers the writer), so frames never interleave.
        (Holding writes to the end of a reactor round, so that one wake-up of
        the receiving process serves several, measured slower: bench/RESULTS.md.)
        """
        data = frame(self._opcode, message)
        sock = self._sock
        if sock is None or self.writing:
            return data
        try:
            sent = rawsocket.send_now(sock, data)
        except trio.BrokenResourceError:
            return data  # the writer meets the error and ends the connection
        return data[sent:] if sent < len(data) else None

    async def send(self, messages: list[bytes], control: list[bytes]) -> None:
        """Frame everything and write it in one ``send_all``."""
        pieces = encode_frames(self._opcode, messages, self._deflate)
        if control:
            pieces[:0] = control
        self.writing = True
        try:
            await self.stream.send_all(b"".join(pieces))
        finally:
            self.writing = False

    async def send_close(self, code: int, reason: str) -> None:
        """Send our close frame (RFC 6455 echoes 1005 as 1000)."""
        await self.stream.send_all(close_frame(1000 if code == 1005 else code, reason))

    async def aclose(self) -> None:
        """Close the TCP connection."""
        if self._reactor is not None and self._sock is not None:
            # never leave a closed socket's number in the set: it may be reused
            self._reactor.unwatch(self._sock.fileno())
        try:
            await self.stream.aclose()
        finally:
            if self.closed is not None:
                self.closed.set()
