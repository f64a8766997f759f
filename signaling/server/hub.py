"""The node: settings, the session registry, the seams, and live connections."""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from typing import TYPE_CHECKING

import trio

from ..core import RateLimiter, Registry
from ..core.lifecycle import Beat, Heartbeat
from ..core.resume import Away, Resumes
from ..errors import CloseCode
from ..frames import frame_tags
from .auth import Authenticator, Authorizer, identity_seams
from .connection import Connection
from .handshake import Refusal, cap_key
from .ice import IceServersProvider, ice_provider
from .stats import Stats

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..codec import Codec
    from ..core import Peer
    from ..frames import ClientFrame
    from .cluster import Cluster
    from .config import Settings
    from .transports.base import Transport

__all__ = ["Hub"]

log = logging.getLogger("signaling.hub")


HEARTBEAT_SLICE = 500
"""Connections the heartbeat checks between two checkpoints (about a millisecond)."""


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
        self.registry = Registry(
            max_participants=settings.max_participants,
            max_sessions_per_connection=settings.max_sessions_per_connection,
        )
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self.stats = Stats(frame_tags())
        default_authenticator, default_authorizer = identity_seams(settings)
        self.authenticator: Authenticator = authenticator or default_authenticator
        self.authorizer: Authorizer = authorizer or default_authorizer
        self.ice: IceServersProvider = ice or ice_provider(settings)
        self.connections: set[Connection] = set()
        self.by_ip: Counter[str] = Counter()
        self.by_connection_id: dict[str, Connection] = {}
        self.make_sid: Callable[[], str] = lambda: secrets.token_urlsafe(12)
        """New Engine.IO session ids (``--workers``: ids that name this worker)."""
        self.cluster: Cluster | None = None
        if settings.redis_url:
            from .cluster import Cluster

            self.cluster = Cluster(self, settings.redis_url)
        self.by_user: Counter[str] = Counter()
        self.corked = False
        """A reader is routing several messages from one read: relays queue for their
        writers to coalesce instead of going out one write each."""
        self.draining = False
        self._all_closed = trio.Event()
        self.resumes = Resumes(
            settings.resume_window,
            max_frames=settings.outbox_frames,
            max_bytes=settings.outbox_bytes,
            capacity=settings.max_connections,
        )
        """Connections that dropped and may resume (protocol/SPEC.md §10)."""
        self.by_resume_token: dict[str, Connection] = {}
        """Live connections by the resume token of their latest ``welcome``."""
        self._ending: dict[str, Connection] = {}
        """Away connections whose tasks still run (flushing, closing), by token: a
        resume takes what they have not written yet first."""
        self._away_ip: dict[str, str] = {}
        """The per-IP cap's key of each away connection (by token): an away
        connection counts against its IP until it resumes or leaves, so one
        address cannot fill the table by dropping connections."""
        self._resumes_changed = trio.Event()
        self._resumes_shrank = trio.Event()
        self.resumes.on_due = lambda: self._resumes_changed.set()

    def open(
        self, transport: Transport, codec: Codec[ClientFrame], ip: str, remote: str
    ) -> Connection:
        """Count a connection in before its upgrade is answered (no await in between
        the caps check and this, so a burst cannot overshoot them); `Connection.run`
        counts it out."""
        connection = Connection(self, transport, codec, ip, remote)
        self.add(connection)
        if self.draining:
            connection.close(CloseCode.GOING_AWAY, "server shutting down")
        return connection

    async def serve_connection(
        self, transport: Transport, codec: Codec[ClientFrame], ip: str, remote: str
    ) -> None:
        """Open one accepted WebSocket connection (from ``ip``) and run it to its end."""
        await self.open(transport, codec, ip, remote).run()

    async def aclose(self) -> None:
        """Release the seams' outbound HTTP connections (TURN provider, keys, webhook)."""
        for resource in (self.ice, self.authenticator, self.authorizer):
            close = getattr(resource, "aclose", None)
            if close is not None:
                await close()

    def close_all(self, code: int, reason: str) -> None:
        """Start closing every connection (shutdown: 1001, reconnect elsewhere)."""
        self.draining = True
        if not self.connections:
            self._all_closed.set()
        for connection in list(self.connections):
            connection.close(code, reason)

    def admit(self, ip: str) -> Refusal | None:
        """Whether a new WebSocket from ``ip`` fits the node's and the IP's caps."""
        settings = self.settings
        if self.draining:
            return Refusal(503, "draining", "the server is shutting down; connect again")
        if len(self.connections) >= settings.max_connections:
            return Refusal(
                503,
                "server-full",
                f"this node holds its maximum of {settings.max_connections} connections",
            )
        key = cap_key(ip)
        if settings.max_connections_per_ip and self.by_ip[key] >= settings.max_connections_per_ip:
            return Refusal(
                429,
                "too-many-connections",
                f"{key} has {settings.max_connections_per_ip} connections open already",
            )
        return None

    def add(self, connection: Connection) -> None:
        """A connection started."""
        self.connections.add(connection)
        self.by_ip[cap_key(connection.ip)] += 1
        self.by_connection_id[connection.connection_id] = connection

    def remove(self, connection: Connection) -> None:
        """A connection ended."""
        self.connections.discard(connection)
        if self.by_connection_id.get(connection.connection_id) is connection:
            # (a resumed connection took over the id of the one it replaced)
            del self.by_connection_id[connection.connection_id]
        if connection.resume_token is not None:
            self.by_resume_token.pop(connection.resume_token, None)
        _decrement(self.by_ip, cap_key(connection.ip))
        if self.draining and not self.connections:
            self._all_closed.set()

    def user_left(self, user_id: str) -> None:
        """One connection of ``user_id`` ended (the per-user cap's count)."""
        _decrement(self.by_user, user_id)

    # --- resume (protocol/SPEC.md §10) -------------------------------------------------

    @property
    def resume_window(self) -> float:
        """Seconds an away connection's seats wait (0: resume is off)."""
        return self.resumes.window

    def new_resume_token(self, connection: Connection) -> str | None:
        """A fresh token for ``connection``'s ``welcome`` (its previous one stops
        working); None when resume is off."""
        if not self.resumes.enabled:
            return None
        if connection.resume_token is not None:
            self.by_resume_token.pop(connection.resume_token, None)
        secret = secrets.token_urlsafe(18)
        if self.cluster is not None:  # names this node, for a resume on another
            token = self.cluster.resume_token(connection.connection_id, secret)
        else:
            token = "r_" + secret
        self.by_resume_token[token] = connection
        return token

    def rename(self, connection: Connection, connection_id: str) -> None:
        """``connection`` resumed the one called ``connection_id`` and takes its id."""
        if self.by_connection_id.get(connection.connection_id) is connection:
            del self.by_connection_id[connection.connection_id]
        connection.connection_id = connection_id
        self.by_connection_id[connection_id] = connection

    def go_away(self, connection: Connection) -> Away | None:
        """``connection`` ended without its client's 1000: its peer keeps its seats
        for the window, its frames held. None (and nothing kept) when resume is off."""
        peer = connection.peer
        token = connection.resume_token
        if not self.resumes.enabled or peer is None or peer.closed or token is None:
            return None
        self.by_resume_token.pop(token, None)
        away = self.resumes.go_away(token, peer, trio.current_time())
        key = cap_key(connection.ip)
        self.by_ip[key] += 1
        self._away_ip[token] = key
        self._ending[token] = connection
        self._resumes_changed.set()
        log.info(
            "away: %d seat%s kept for %g s",
            len(peer.sessions),
            "" if len(peer.sessions) == 1 else "s",
            self.resumes.window,
            extra=connection.log_ids(),
        )
        return away

    def claim(self, token: str, user_id: str, claimer: Connection) -> Away | None:
        """The away connection ``token`` names, for ``user_id``'s new connection.

        A token of a connection still open here (the client saw it drop; this
        node did not yet) closes that one first, so its seats move over too.
        """
        away = self.take_away(token, user_id, claimer)
        self.stats.resumes["resumed" if away is not None else "refused"] += 1
        return away

    def take_away(self, token: str, user_id: str, claimer: Connection | None = None) -> Away | None:
        """`claim` without the count (another node's claim counts there)."""
        live = self.by_resume_token.get(token)
        if live is not None and live is not claimer and live.user_id == user_id:
            live.close(CloseCode.NORMAL, "resumed on a new connection")
        ending = self._ending.get(token)
        if ending is not None and ending.user_id == user_id:
            ending.hold_unsent()  # still queued there: it goes with the resume, first
        away = self.resumes.claim(token, user_id, trio.current_time())
        if away is not None:
            self._release_ip(away.token)
            self._resumes_shrank.set()
        return away

    def ended_away(self, connection: Connection) -> None:
        """An away connection's tasks are done."""
        if connection.resume_token is not None:
            self._ending.pop(connection.resume_token, None)

    def _release_ip(self, token: str) -> None:
        key = self._away_ip.pop(token, None)
        if key is not None:
            _decrement(self.by_ip, key)

    def leave_for_good(self, away: Away, why: str) -> None:
        """An away connection's window is over: its seats go, the others hear
        ``user-left`` once (here and on the other nodes)."""
        peer = away.peer
        sessions = list(peer.sessions)
        log.info(
            "away too long (%s): leaving %d session%s",
            why,
            len(sessions),
            "" if len(sessions) == 1 else "s",
            extra=peer.log_ids(),
        )
        self.stats.resume_expiries[why] += 1
        self._release_ip(away.token)
        self._resumes_shrank.set()
        self.release(peer)

    def release(self, peer: Peer) -> None:
        """``peer`` leaves every session for good: the others hear ``user-left``
        once, here and (through Redis) on the other nodes."""
        sessions = list(peer.sessions)
        peer.close()
        if self.cluster is not None and sessions:
            self.cluster.leaving(peer, sessions)

    async def serve_resumes(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """End the windows of away connections as they run out (or overflow)."""
        task_status.started()
        while True:
            with trio.move_on_at(self.resumes.next_deadline()):
                await self._resumes_changed.wait()
            self._resumes_changed = trio.Event()
            self._expire_due()

    def _expire_due(self) -> None:
        now = trio.current_time()
        for away in self.resumes.due(now):
            why = (
                "overflow" if away.overflowed else "window" if now >= away.deadline else "capacity"
            )
            self.leave_for_good(away, why)

    async def wait_resumed(self) -> None:
        """Until no connection is away (each resumed, here or on another node, or
        left): a draining node of a cluster hands its connections over."""
        while len(self.resumes):
            self._resumes_shrank = trio.Event()
            await self._resumes_shrank.wait()

    def end_resumes(self) -> None:
        """The node stops: every away connection leaves now."""
        for away in self.resumes.take_all():
            self.leave_for_good(away, "shutdown")

    async def wait_closed(self) -> None:
        """After `close_all`: wait until no connection is left."""
        if self.connections:
            await self._all_closed.wait()

    async def serve_heartbeat(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Ping idle connections, close those that answer nothing and those whose
        token expired: the rules are `Heartbeat` and `token_expired`, this the clock."""
        heartbeat = Heartbeat(self.settings.ping_interval, self.settings.ping_timeout)
        task_status.started()
        while True:
            await trio.sleep(heartbeat.tick)
            now = trio.current_time()
            wall = time.time()
            for index, connection in enumerate(list(self.connections)):
                if index and not index % HEARTBEAT_SLICE:
                    # tens of thousands of connections: let relays through meanwhile
                    await trio.lowlevel.checkpoint()
                if connection.close_code is not None:
                    continue  # closing already (within its close timeout)
                transport = connection.transport
                beat = heartbeat.check(
                    now,
                    transport.last_activity,
                    connection.pinged_at,
                    always_ping=getattr(transport, "always_ping", False),
                )
                if beat is Beat.TIMEOUT:
                    idle = now - transport.last_activity
                    log.info("silent for %.0f s; closing", idle, extra=connection.log_ids())
                    connection.close(CloseCode.TIMEOUT, "no answer to pings")
                elif beat is Beat.PING:
                    connection.pinged_at = now
                    transport.ping()
                connection.expire(wall)


def _decrement(counts: Counter[str], key: str) -> None:
    """Count ``key`` down by one, forgetting it at zero."""
    if counts[key] > 1:
        counts[key] -= 1
    else:
        counts.pop(key, None)
