"""Non-blocking I/O on the socket under a plain trio `trio.SocketStream`.

Where many small messages each cost a read or a write (the ``/ws``
transport, the Redis signal link), trio's stream methods cost more than the
syscall they wrap: ``receive_some`` and ``send_all`` each take two
checkpoints, a conflict detector and an error-translating context manager
(bench/RESULTS.md). These helpers call the stdlib socket trio keeps
underneath directly and raise what trio's streams raise, so callers handle
errors the same way on either path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    import socket

__all__ = ["receive", "receive_now", "send_now", "stdlib_socket"]


def stdlib_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a plain TCP or Unix `trio.SocketStream`; None for
    any other stream (TLS, a test's memory stream), which keeps the stream's path."""
    if type(stream) is not trio.SocketStream:
        return None
    sock: socket.socket | None = getattr(stream.socket, "_sock", None)  # where trio keeps it
    return sock


def _broken(exc: OSError) -> trio.BrokenResourceError:
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


def receive_now(sock: socket.socket, size: int) -> bytes | None:
    """What has arrived (``b""`` at EOF), or None when nothing has; raises
    `trio.BrokenResourceError`."""
    try:
        return sock.recv(size)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise _broken(exc) from exc


async def receive(sock: socket.socket, size: int) -> bytes:
    """Wait until something arrives (a checkpoint, so one busy peer cannot starve
    the others) and return it, ``b""`` at EOF; raises `trio.BrokenResourceError`."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        data = receive_now(sock, size)
        if data is not None:
            return data


def send_now(sock: socket.socket, data: bytes) -> int:
    """Bytes of ``data`` the socket took without waiting (0 when it is full);
    raises `trio.BrokenResourceError`."""
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise _broken(exc) from exc
