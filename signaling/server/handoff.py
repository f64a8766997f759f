"""``--workers N``: each Engine.IO request reaches the worker that holds its session.

socket.io-client opens on HTTP long-polling: a handshake, then GETs and POSTs
carrying the session id (``sid``), then a WebSocket upgrade with the same
``sid``, each on a TCP connection that the kernel may give to any worker
sharing the port. The session lives in the worker that answered the
handshake, whose number the ``sid`` carries (`Workers.make_sid`). A worker
whose front door reads a request for another worker's ``sid`` hands the
connection over (the same job Node's cluster primary does with
``@socket.io/sticky``):

- plain TCP: the socket itself moves to the owner over a Unix socket
  (``SCM_RIGHTS``), with the bytes already read; the owner serves it as if it
  had accepted it, and this worker is out of the path;
- TLS: a TLS session cannot move between processes, so this worker keeps
  the TLS side and relays the plain bytes to the owner over the Unix socket.

Each worker listens on ``{folder}/w{index}.sock``; the supervisor makes the
folder and tells each worker its index (`Workers.from_environ`).
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import secrets
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Workers", "hand_off", "serve_handoffs"]

log = logging.getLogger("signaling.handoff")

HEADER_LIMIT = 1 << 20
"""Largest hand-over message (a header and the bytes read so far) accepted."""
_LENGTH = struct.Struct("!I")


class HandedOver(msgspec.Struct):
    """What comes with a handed-over connection."""

    ip: str
    """The client's IP as the handing worker decided it."""
    remote: str
    """``host:port`` of the TCP peer, for logs."""
    fd: bool
    """True: the socket came along; False: the Unix connection relays its bytes."""
    prefix_length: int


_encode = msgspec.json.Encoder().encode
_decode_header = msgspec.json.Decoder(HandedOver).decode


@dataclass(frozen=True)
class Workers:
    """This worker's place among the workers of one ``signaling serve --workers N``."""

    index: int
    count: int
    folder: str

    ENV_INDEX = "SIGNALING_WORKER_INDEX"
    ENV_COUNT = "SIGNALING_WORKER_COUNT"
    ENV_FOLDER = "SIGNALING_HANDOFF_DIR"

    @classmethod
    def from_environ(cls) -> Workers | None:
        """Set by the supervisor for its workers (`signaling.server.workers`)."""
        try:
            return cls(
                int(os.environ[cls.ENV_INDEX]),
                int(os.environ[cls.ENV_COUNT]),
                os.environ[cls.ENV_FOLDER],
            )
        except (KeyError, ValueError):
            return None

    def path(self, index: int) -> str:
        """The Unix socket worker ``index`` takes connections on."""
        return os.path.join(self.folder, f"w{index}.sock")

    def make_sid(self) -> str:
        """A new Engine.IO session id that names this worker."""
        return f"{self.index}.{secrets.token_urlsafe(12)}"

    def owner(self, sid: str) -> int | None:
        """The worker that made ``sid``, if it names one."""
        index, sep, _ = sid.partition(".")
        if not sep or not index.isdigit() or len(index) > 4:
            return None
        number = int(index)
        return number if number < self.count else None


async def hand_off(
    workers: Workers, owner: int, stream: trio.abc.Stream, prefix: bytes, ip: str, remote: str
) -> bool:
    """Pass ``stream`` (``prefix``: what was read of it) to worker ``owner``.

    Returns False when the owner cannot be reached (it is restarting): the
    caller answers the request itself.
    """
    unix = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await unix.connect(workers.path(owner))
    except OSError:
        unix.close()
        return False
    moves = isinstance(stream, trio.SocketStream)
    header = _encode(HandedOver(ip=ip, remote=remote, fd=moves, prefix_length=len(prefix)))
    message = _LENGTH.pack(len(header)) + header + prefix
    if moves:
        assert isinstance(stream, trio.SocketStream)
        fds = array.array("i", [stream.socket.fileno()])
        with unix:
            sent = await unix.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            if sent < len(message):
                await trio.SocketStream(unix).send_all(message[sent:])
        # our copy of the descriptor only: the connection lives on in the owner
        stream.socket.close()
        return True
    relay = trio.SocketStream(unix)
    await relay.send_all(message)
    await _splice(stream, relay)
    return True


async def _splice(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Copy bytes both ways until either side ends, then close both."""

    async def pump(source: trio.abc.Stream, sink: trio.abc.Stream, scope: trio.CancelScope) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, a, b, nursery.cancel_scope)
            nursery.start_soon(pump, b, a, nursery.cancel_scope)
    finally:
        with trio.CancelScope(shield=True):
            await b.aclose()
            await a.aclose()


async def serve_handoffs(
    workers: Workers,
    handle: Callable[[trio.abc.Stream, bytes, str, str], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Take connections other workers hand over; serve each with ``handle``.

    ``handle(stream, prefix, ip, remote)`` gets the stream (the moved TCP
    socket, or the Unix connection that relays a TLS one) and what was read.
    """
    path = workers.path(workers.index)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by this worker's predecessor
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(128)
    async with trio.open_nursery() as nursery:
        task_status.started()
        try:
            while True:
                unix, _ = await listener.accept()
                nursery.start_soon(_take, unix, handle)
        finally:
            listener.close()


async def _take(
    unix: trio.socket.SocketType,
    handle: Callable[[trio.abc.Stream, bytes, str, str], Awaitable[None]],
) -> None:
    relay = trio.SocketStream(unix)
    fds: list[int] = []
    try:
        with trio.fail_after(5):
            data, fds = await _receive_with_fd(unix)
            while len(data) < _LENGTH.size:
                data += await _more(relay)
            (length,) = _LENGTH.unpack_from(data)
            if length > HEADER_LIMIT:
                raise ValueError("hand-over header too large")
            while len(data) < _LENGTH.size + length:
                data += await _more(relay)
            header = _decode_header(data[_LENGTH.size : _LENGTH.size + length])
            end = _LENGTH.size + length + header.prefix_length
            if header.prefix_length > HEADER_LIMIT:
                raise ValueError("hand-over prefix too large")
            while len(data) < end:
                data += await _more(relay)
    except (OSError, ValueError, msgspec.DecodeError, trio.TooSlowError, EOFError) as exc:
        log.warning("a worker's hand-over failed: %s", exc)
        for fd in fds:
            os.close(fd)
        await relay.aclose()
        return
    prefix = data[_LENGTH.size + length : end]
    if header.fd:
        if len(fds) != 1:
            log.warning("a worker's hand-over came without its socket")
            for fd in fds:
                os.close(fd)
            await relay.aclose()
            return
        await relay.aclose()
        stream: trio.abc.Stream = trio.SocketStream(
            trio.socket.from_stdlib_socket(socket.socket(fileno=fds[0]))
        )
    else:
        stream = relay
    await handle(stream, prefix, header.ip, header.remote)


async def _receive_with_fd(unix: trio.socket.SocketType) -> tuple[bytes, list[int]]:
    data, ancillary, _, _ = await unix.recvmsg(65536, socket.CMSG_SPACE(array.array("i").itemsize))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    if not data and not fds:
        raise EOFError("the handing worker closed the connection")
    return data, fds


async def _more(relay: trio.SocketStream) -> bytes:
    data = await relay.receive_some(65536)
    if not data:
        raise EOFError("hand-over cut short")
    return bytes(data)
