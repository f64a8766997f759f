"""The node: settings, the session registry, the seams, and live connections."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..core import RateLimiter, Registry
from ..errors import CloseCode
from .auth import AllowAll, Authenticator, Authorizer, DevelopmentAuthenticator
from .connection import Connection
from .ice import IceServersProvider, StaticIceServers
from .metrics import Stats

if TYPE_CHECKING:
    from ..codec import Codec
    from ..frames import ClientFrame
    from .config import Settings
    from .connection import Transport

__all__ = ["Hub"]

log = logging.getLogger("signaling.hub")


class Hub:
    """Everything one server process shares between its connections."""

    def __init__(
        self,
        settings: Settings,
        *,
        authenticator: Authenticator | None = None,
        authorizer: Authorizer | None = None,
        ice: IceServersProvider | None = None,
    ) -> None:
        self.settings = settings
        self.registry = Registry(max_participants=settings.max_participants)
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self.stats = Stats()
        self.authenticator: Authenticator = authenticator or DevelopmentAuthenticator()
        self.authorizer: Authorizer = authorizer or AllowAll()
        self.ice: IceServersProvider = ice or StaticIceServers(settings.stun_urls)
        self.connections: set[Connection] = set()
        self.draining = False
        self._all_closed = trio.Event()

    async def serve_connection(
        self, transport: Transport, codec: Codec[ClientFrame], remote: str
    ) -> None:
        """Run one accepted WebSocket connection to its end."""
        connection = Connection(self, transport, codec, remote)
        if self.draining:
            connection.close(CloseCode.GOING_AWAY, "server shutting down")
        await connection.run()

    def close_all(self, code: int, reason: str) -> None:
        """Start closing every connection (shutdown: 1001, reconnect elsewhere)."""
        self.draining = True
        if not self.connections:
            self._all_closed.set()
        for connection in list(self.connections):
            connection.close(code, reason)

    def add(self, connection: Connection) -> None:
        """A connection started."""
        self.connections.add(connection)

    def remove(self, connection: Connection) -> None:
        """A connection ended."""
        self.connections.discard(connection)
        if self.draining and not self.connections:
            self._all_closed.set()

    async def wait_closed(self) -> None:
        """After `close_all`: wait until no connection is left."""
        if self.connections:
            await self._all_closed.wait()

    async def serve_heartbeat(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Ping every connection each interval; close those silent for two intervals."""
        interval = self.settings.ping_interval
        task_status.started()
        while True:
            await trio.sleep(interval)
            deadline = trio.current_time() - 2 * interval
            for connection in list(self.connections):
                transport = connection.transport
                if transport.last_activity < deadline:
                    log.info("silent for %.0f s; closing", 2 * interval, extra=connection.log_ids())
                    connection.close(CloseCode.TIMEOUT, "no answer to pings")
                else:
                    transport.ping()
