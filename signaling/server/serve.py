"""`serve`: the whole server in one trio process on one port."""

from __future__ import annotations

import gc
import logging
import ssl
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

from ..errors import CloseCode
from .app import create_app
from .config import ConfigError
from .front import FrontDoor
from .handoff import Workers, serve_handoffs
from .hub import Hub
from .logs import label_process

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable, Sequence

    from .config import Settings
    from .transports.polling import PollingChannel

__all__ = [
    "GC_THRESHOLDS",
    "hypercorn_config",
    "hypercorn_values",
    "serve",
    "ssl_context",
    "tune_gc",
]

log = logging.getLogger("signaling.serve")


GC_THRESHOLDS = (50_000, 20, 20)
"""The cyclic collector's thresholds for a serving process (CPython's: 700, 10, 10)."""


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the relay path of a serving process.

    With CPython's defaults, a node relaying 20,000 messages/s over 2,000
    connections spent about 3.3 s of every 8 in the collector (a full
    collection took 137 ms and walked every object of every connection and
    every imported module), which is where its worst latencies came from
    (bench/RESULTS.md). Objects alive at start-up are frozen out of the
    collector's walks, and collections run per 50,000 allocations rather
    than 700: the same load then spends 0.18 s in it. Garbage without cycles
    is freed by reference counting as before; the collector still runs.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def hypercorn_values(settings: Settings) -> dict[str, Any]:
    """Our replacements for hypercorn's defaults."""
    return {
        "bind": [f"{settings.host}:{settings.port}"],
        "backlog": settings.backlog,
        "graceful_timeout": settings.graceful_timeout,
        "websocket_max_message_size": settings.max_message_bytes,
        "websocket_ping_interval": settings.ping_interval,
        "keep_alive_timeout": 75.0,
        "accesslog": None,
        # hypercorn's lines go through our handlers (`configure_logging`), once,
        # in our format: a Logger object, not a stream hypercorn opens itself
        "errorlog": logging.getLogger("hypercorn.error"),
        **(
            {"certfile": settings.certfile, "keyfile": settings.keyfile}
            if settings.certfile
            else {}
        ),
    }


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None without a certificate; raises `ConfigError`."""
    if not settings.certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile)
    except (OSError, ssl.SSLError) as exc:
        reason = _pem_problem(settings.certfile, settings.keyfile) or (
            exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        )
        raise ConfigError(
            f"cannot load SSL_CERTFILE={settings.certfile!r} / SSL_KEYFILE={settings.keyfile!r}: "
            f"{reason}"
        ) from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def _pem_problem(certfile: str, keyfile: str) -> str | None:
    """What is wrong with a certificate/key pair OpenSSL refused, in words
    (OpenSSL itself says ``[SSL] PEM lib``)."""
    try:
        cert = Path(certfile).read_text(errors="replace")
        key = Path(keyfile).read_text(errors="replace")
    except OSError:
        return None  # OpenSSL's own error names the file
    cert_has_cert, key_has_key = "BEGIN CERTIFICATE" in cert, "PRIVATE KEY-----" in key
    if not cert_has_cert and "PRIVATE KEY-----" in cert and "BEGIN CERTIFICATE" in key:
        return "the two look swapped: SSL_CERTFILE holds a private key, SSL_KEYFILE a certificate"
    if not cert_has_cert:
        return "SSL_CERTFILE holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    if not key_has_key:
        return "SSL_KEYFILE holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)"
    if "ENCRYPTED" in key:
        return "SSL_KEYFILE is encrypted with a passphrase; give the server an unencrypted key"
    return "the private key does not belong to the certificate (or one of them is damaged)"


def hypercorn_config(settings: Settings) -> Config:
    """A hypercorn ``Config`` carrying our values."""
    return Config.from_mapping(hypercorn_values(settings))


def listening_line(settings: Settings, port: int, tls: bool) -> str:
    """The start-up line: where it listens and a URL a person can open."""
    scheme = "https" if tls else "http"
    host = settings.host
    wildcard = host in ("", "0.0.0.0", "::")
    where = f"all interfaces ({host or '*'}), port {port}" if wildcard else f"{host}:{port}"
    shown = "localhost" if wildcard else (f"[{host}]" if ":" in host else host)
    base = f"{scheme}://{shown}:{port}"
    ws = "wss" if tls else "ws"
    return f"listening on {where}: open {base}/ (WebSocket at {ws}://{shown}:{port}/ws)"


async def serve(
    settings: Settings,
    *,
    hub: Hub | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    sock: socket.socket | None = None,
    listeners: Sequence[trio.abc.Listener[trio.SocketStream]] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP and ``/ws`` on one port until ``shutdown_trigger`` returns.

    Reports the bound port through ``task_status`` (use ``nursery.start``).
    ``sock`` is a listening socket to serve instead of opening one (workers);
    ``listeners`` are listeners to serve instead (a `MemoryListener` in tests:
    the port reported is then 0).
    On shutdown it stops accepting, closes every WebSocket with 1001 and
    waits up to ``graceful_timeout`` for them to finish.
    """
    tls = ssl_context(settings)
    hub = hub if hub is not None else Hub(settings)
    if hub.cluster is not None:
        from .backend.redis import ping

        try:
            with trio.fail_after(5):
                await ping(settings.redis_url)
        except Exception as exc:
            leaf: BaseException = exc
            while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
                leaf = leaf.exceptions[0]
            reason = str(leaf).split(". ")[0] or type(leaf).__name__
            raise ConfigError(f"cannot reach REDIS_URL={settings.redis_url}: {reason}") from None
    workers = Workers.from_environ() if sock is not None else None
    if workers is not None:
        hub.make_sid = workers.make_sid
        label_process(worker=str(workers.index))
    if hub.cluster is not None:
        label_process(node=hub.cluster.node)
    # No ASGI WebSocket route here: the front door serves every upgrade itself.
    polling: dict[str, PollingChannel] = {}  # the app's routes and the front door share it
    app = wrap_app(create_app(settings, hub=hub, asgi_websocket=False, polling=polling), 0, "asgi")
    config = hypercorn_config(settings)
    # One request per connection on hypercorn's side: the front door reads every
    # request head, so hypercorn never meets a request it did not vet (a pipelined
    # upgrade, an h2c switch) and, with --workers, each Engine.IO request goes to
    # its session's worker.
    config.keep_alive_max_requests = 1
    context = WorkerContext(None)
    state: dict[str, Any] = {}
    lifespan = Lifespan(app, config, state)
    serving: list[trio.abc.Listener[trio.SocketStream]]
    if listeners is not None:
        serving = list(listeners)
    elif sock is not None:  # a worker: the supervisor's listening socket
        serving = [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
    else:
        tcp = await trio.open_tcp_listeners(
            settings.port, host=settings.host or None, backlog=settings.backlog
        )
        serving = [*tcp]
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        port = _bound_port(serving[0])
        front = FrontDoor(hub, app, config, context, state, tls, workers, polling)
        async with trio.open_nursery() as handlers:
            async with trio.open_nursery() as accepting:
                if workers is not None:
                    await accepting.start(serve_handoffs, workers, front.serve_handed)
                accepting.start_soon(
                    partial(trio.serve_listeners, front.handle, serving, handler_nursery=handlers)
                )
                log.info("%s", listening_line(settings, port, tls is not None))
                task_status.started(port)
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            # Draining: no new connections, /health says 503 on the HTTP
            # connections still open, every WebSocket gets 1001.
            for listener in serving:
                await listener.aclose()
            count = len(hub.connections)
            log.info("draining: closing %d connection%s", count, "" if count == 1 else "s")
            hub.close_all(CloseCode.GOING_AWAY, "server shutting down")
            with trio.move_on_after(settings.graceful_timeout):
                await hub.wait_closed()
                if hub.cluster is not None and len(hub.resumes):
                    # the clients come back on another node, which asks this one
                    # for their seats and held signals (protocol/SPEC.md §10)
                    log.info("draining: %d connections may resume elsewhere", len(hub.resumes))
                    await hub.wait_resumed()
                if hub.cluster is not None:
                    # signals still on their way here for a connection that resumed
                    # elsewhere are sent on; then the last ops go out
                    await hub.cluster.forwarding_done()
                    await hub.cluster.flushed()
            if len(hub.resumes):
                log.info(
                    "stopping with %d away connections; their seats go with this node",
                    len(hub.resumes),
                )
            await context.terminated.set()
            handlers.cancel_scope.deadline = trio.current_time() + 1.0
        log.info("stopped")
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


def _bound_port(listener: trio.abc.Listener[trio.SocketStream]) -> int:
    """The TCP port ``listener`` is bound to; 0 when it has none (a `MemoryListener`)."""
    name = listener.socket.getsockname() if hasattr(listener, "socket") else None
    return int(name[1]) if isinstance(name, tuple) and len(name) > 1 else 0
