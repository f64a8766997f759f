"""``signaling serve --workers N``: N processes serving one listening socket."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING

import trio

from .handoff import Workers

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["supervise"]

log = logging.getLogger("signaling.workers")


def supervise(settings: Settings, argv: list[str]) -> int:
    """Bind the port, run ``settings.workers`` workers on it, restart any that dies.

    SIGTERM or SIGINT is passed on to the workers (each drains its
    connections); returns 0 once they have exited.
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.create_server(
        (settings.host, settings.port), family=family, backlog=settings.backlog
    )
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    # where the workers hand each other Engine.IO requests (signaling.server.handoff)
    folder = tempfile.mkdtemp(prefix="signaling-workers-")
    env = {
        **os.environ,
        "SIGNALING_LISTEN_FD": str(listener.fileno()),
        Workers.ENV_COUNT: str(settings.workers),
        Workers.ENV_FOLDER: folder,
    }
    command = [sys.executable, "-m", "signaling", *argv]
    log.info("listening on %s:%d with %d workers", settings.host, port, settings.workers)

    async def main() -> None:
        workers: set[trio.Process] = set()
        stopping = trio.Event()

        async def run_worker(index: int) -> None:
            while not stopping.is_set():
                process = await trio.lowlevel.open_process(
                    command,
                    env={**env, Workers.ENV_INDEX: str(index)},
                    pass_fds=(listener.fileno(),),
                    stdin=subprocess.DEVNULL,
                )
                workers.add(process)
                code = await process.wait()
                workers.discard(process)
                if not stopping.is_set():
                    log.warning("worker %d exited with %d; starting another", process.pid, code)
                    await trio.sleep(1)

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                for index in range(settings.workers):
                    nursery.start_soon(run_worker, index)
                async for signum in signals:
                    log.info("%s received: stopping the workers", signal.Signals(signum).name)
                    stopping.set()
                    for process in list(workers):
                        process.send_signal(signal.SIGTERM)
                    break
                # the workers drain; the nursery ends when the last one has exited
                nursery.cancel_scope.deadline = trio.current_time() + settings.graceful_timeout + 5
        for process in list(workers):
            process.kill()

    try:
        trio.run(main)
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)
    return 0
