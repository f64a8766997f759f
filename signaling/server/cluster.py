"""Many nodes as one server: seats in Redis, signals through one channel per node.

Each node keeps, for every session with a local participant, a replica of
its seats: local `signaling.core.Peer` objects and `RemotePeer` proxies for
participants on other nodes. The core routes on that replica without
waiting: a relay to a local participant never touches Redis; one to a remote
participant is queued for its node and published in a batch, one PUBLISH per
node per flush. Membership changes travel as ops on the same channels; each
node turns them into ``user-joined`` / ``user-left`` for its own clients.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import trio

from ..errors import InternalError, SessionFull
from ..frames import ServerFrame, UserJoined, UserLeft
from .backend.redis import RedisDirectory, Seat
from .backend.resp import RedisReplyError, RespLink, command

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    from ..core import Peer, Registry
    from ..core.resume import Away, Resumes
    from ..frames import JoinSession
    from .config import Settings
    from .connection import Connection

__all__ = [
    "Claim",
    "Cluster",
    "Handover",
    "Joined",
    "Left",
    "Moved",
    "Op",
    "Refused",
    "Relay",
    "RemotePeer",
    "token_holder",
]

log = logging.getLogger("signaling.cluster")

FLUSH_MAX_OPS = 512
"""Queued ops that end a flush's linger early (a burst need not wait)."""


class Relay(msgspec.Struct, tag="r", array_like=True, frozen=True, gc=False):
    """A signal for one connection on the receiving node (its frame in MessagePack,
    decoded only there)."""

    connection_id: str
    frame: bytes


class Joined(msgspec.Struct, tag="j", array_like=True, frozen=True, gc=False):
    """``user_id`` took a seat in ``session_id`` on ``node``; it replaced the seat of
    ``previous_id`` on ``previous_node`` ("" when it replaced none)."""

    session_id: str
    user_id: str
    node: str
    connection_id: str
    previous_node: str = ""
    previous_id: str = ""


class Left(msgspec.Struct, tag="l", array_like=True, frozen=True, gc=False):
    """The seat of ``connection_id`` on ``node`` in ``session_id`` is free."""

    session_id: str
    user_id: str
    node: str
    connection_id: str


class Claim(msgspec.Struct, tag="c", array_like=True, frozen=True, gc=False):
    """A new connection on ``node`` asks to resume with ``token`` for ``user_id``
    (protocol/SPEC.md §10); the answer names ``claim_id``."""

    token: str
    user_id: str
    node: str
    claim_id: str


class Handover(msgspec.Struct, tag="h", array_like=True, frozen=True, gc=False):
    """The answer to a `Claim`: the away connection ``connection_id``, the
    sessions it sits in and the frames held for it (MessagePack), in order.
    From here on the claiming node holds its seats."""

    claim_id: str
    connection_id: str
    sessions: list[str]
    held: list[bytes]


class Refused(msgspec.Struct, tag="f", array_like=True, frozen=True, gc=False):
    """The answer to a `Claim` that cannot be granted (used, expired, foreign)."""

    claim_id: str


class Moved(msgspec.Struct, tag="m", array_like=True, frozen=True, gc=False):
    """``user_id``'s seat in ``session_id`` (connection ``connection_id``) moved
    from ``from_node`` to ``to_node`` by a resume: nobody is told, the replicas
    update."""

    session_id: str
    user_id: str
    connection_id: str
    from_node: str
    to_node: str


Op = Relay | Joined | Left | Claim | Handover | Refused | Moved
"""What nodes tell each other. On the wire each is a MessagePack array that
starts with its tag (``["j", session, user, node, connection, …]``), and a
node's channel carries a list of them per PUBLISH."""

CLAIM_TIMEOUT = 2.0
"""Seconds a resume waits for the node that holds the away connection (a dead
node never answers: then it is a new connection)."""


def token_holder(token: str) -> tuple[str, str] | None:
    """The node and connection id a cluster resume token names
    (``r.{node}.{connection}.{secret}``), or None for another shape."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != "r" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class _Arriving:
    """A resume under way on this node: what arrives for the connection before it
    is installed (signals forwarded by the old node, and those that local
    participants send to it meanwhile), kept in order, bounded."""

    __slots__ = (
        "buffer",
        "connection_id",
        "done",
        "limit",
        "overflowed",
        "placeholders",
        "reply",
        "user_id",
    )

    def __init__(self, user_id: str, connection_id: str, limit: int) -> None:
        self.user_id = user_id
        self.connection_id = connection_id
        self.limit = limit
        self.buffer: list[ServerFrame] = []
        self.overflowed = False
        self.placeholders: dict[str, RemotePeer] = {}
        """Session → the `RemotePeer` this node's replica had for the seat."""
        self.done = trio.Event()
        self.reply: Handover | Refused | None = None

    def wait_in(self, registry: Registry, session_id: str, remote: RemotePeer) -> None:
        """Hold the user's seat in ``session_id`` here while the resume is under
        way (``remote``: the seat this replica had, put back if it fails)."""
        self.placeholders[session_id] = remote
        registry.place(session_id, _Placeholder(self))

    def deliver(self, frame: ServerFrame) -> None:
        if len(self.buffer) >= self.limit:
            self.overflowed = True
            return
        self.buffer.append(frame)

    def evict(self, session_id: str) -> None:
        """Another connection of the user took the seat meanwhile."""
        self.placeholders.pop(session_id, None)


class _Placeholder:
    """Holds a seat in this node's replica while its resume is under way."""

    __slots__ = ("_arriving", "user_id")

    is_remote = True

    def __init__(self, arriving: _Arriving) -> None:
        self._arriving = arriving
        self.user_id = arriving.user_id

    @property
    def connection_id(self) -> str:
        return self._arriving.connection_id

    def deliver(self, frame: ServerFrame) -> None:
        self._arriving.deliver(frame)  # signals and news alike: the client's, once back

    def evict(self, session_id: str) -> None:
        self._arriving.evict(session_id)


_encode = msgspec.msgpack.Encoder().encode
_decode_ops = msgspec.msgpack.Decoder(list[Op]).decode
_decode_frame = msgspec.msgpack.Decoder(ServerFrame).decode


class RemotePeer:
    """A participant on another node, as this node's registry holds it."""

    __slots__ = ("_cluster", "connection_id", "node", "user_id")

    is_remote = True

    def __init__(self, cluster: Cluster, user_id: str, seat: Seat) -> None:
        self._cluster = cluster
        self.user_id = user_id
        self.node = seat.node
        self.connection_id = seat.connection

    def deliver(self, frame: ServerFrame) -> None:
        """Forward a relayed signal to its node; membership frames travel as ops.

        Raises `InternalError` while Redis is unreachable, so the sender hears
        at once that the signal did not go out.
        """
        if type(frame) is UserJoined or type(frame) is UserLeft:
            return
        if not self._cluster.healthy:
            raise InternalError(
                f"{self.user_id!r} is on another node and Redis is unreachable; try again"
            )
        self._cluster.send(self.node, Relay(self.connection_id, _encode(frame)))

    def evict(self, session_id: str) -> None:
        """The ``joined`` op sent to its node carries the eviction."""


class ClusterNode(Protocol):
    """What the cluster uses of its node (`signaling.server.hub.Hub`)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def connections(self) -> Collection[Connection]: ...
    @property
    def by_connection_id(self) -> Mapping[str, Connection]: ...
    @property
    def resumes(self) -> Resumes: ...

    def take_away(self, token: str, user_id: str) -> Away | None:
        """The away connection ``token`` names, out of the table, for a resume."""
        ...


class Cluster:
    """This node's link to the others through Redis."""

    def __init__(self, hub: ClusterNode, url: str, node: str | None = None) -> None:
        self.hub = hub
        self.node = node or secrets.token_hex(6)
        ttl = hub.settings.node_ttl
        self.url = url
        self.directory = RedisDirectory(url, self.node, heartbeat_ttl=ttl)
        self._outgoing: dict[str, list[Op]] = {}
        self.healthy = True
        """False while Redis does not answer (``/health`` says ``degraded``)."""
        self.listening = False
        """True while this node is subscribed to its channel."""
        self.linger = hub.settings.cluster_flush_ms / 1000
        """Seconds a queued op waits for others before the flush (at most 1.5x that)."""
        self._queued = 0
        self._wake = trio.Event()
        self._due = trio.Event()
        """Set when the flush's linger is over (`_after_round`)."""
        self._first_queued = 0.0
        self._publishing: tuple[RespLink, float] | None = None
        """The link and since when, while a flush waits for its replies."""
        self._departures_in, self._departures_out = trio.open_memory_channel[
            tuple[str, str, list[str]]
        ](math.inf)
        self._sent = trio.Event()
        """Set after each flush (published or lost): `flushed` waits on it."""
        self._claims: dict[str, _Arriving] = {}
        """Resumes this node asked another node for, by claim id."""
        self._arriving: dict[str, _Arriving] = {}
        """The same, by connection id, once handed over (until installed)."""
        self._forwarding = trio.Event()
        """Set when a signal is sent on to where its connection resumed."""
        self._forwarded: dict[str, tuple[str, float]] = {}
        """Connection id → (node, until when): connections resumed elsewhere;
        a signal that still comes here for one is sent on."""

    # --- sending ----------------------------------------------------------------

    def send(self, node: str, op: Op) -> None:
        """Queue ``op`` for ``node``; the flusher publishes queued ops in batches."""
        if not self._outgoing:
            # the first op since the last flush wakes the flusher; the ones that
            # follow find it awake (it empties `_outgoing` when it renews `_wake`)
            self._first_queued = trio.current_time()
            self._wake.set()
        self._outgoing.setdefault(node, []).append(op)
        self._queued += 1

    def _after_round(self, now: float) -> None:
        """The reactor finished a round: the linger is over once `linger` has passed
        since the first queued op, or FLUSH_MAX_OPS are waiting."""
        if self._outgoing and (
            now - self._first_queued >= self.linger or self._queued >= FLUSH_MAX_OPS
        ):
            self._due.set()

    async def _flush_loop(self) -> None:
        """Publish what `send` queued: one PUBLISH per node per flush, all of a
        flush's PUBLISHes in one write on this node's own link (`RespLink`)."""
        link: RespLink | None = None
        try:
            while True:
                await self._wake.wait()
                # Linger so that signals from many senders leave as one PUBLISH per
                # node instead of one each: on the bench, 5 ms instead of 1 ms took
                # the node CPU of a cross-node relay from about 2x a local one to
                # 1.5x, for about 3 ms more latency (SIGNALING_CLUSTER_FLUSH_MS).
                # While traffic flows, the reactor's rounds tell when the linger is
                # over (`_after_round`); this timer, which costs a cancellation each
                # time it fires, only ends a linger no round did.
                with trio.move_on_after(1.5 * self.linger):
                    await self._due.wait()
                self._wake = trio.Event()
                self._due = trio.Event()
                self._queued = 0
                batches, self._outgoing = self._outgoing, {}
                commands = [
                    command("PUBLISH", f"sig:c:{node}", _encode(ops))
                    for node, ops in batches.items()
                ]
                try:
                    if link is None:
                        link = await RespLink.open(self.url)
                    # no timeout scope per flush: `_watch_publishing` breaks a
                    # link whose replies are late
                    self._publishing = (link, trio.current_time())
                    replies = await link.call(commands)
                    self._publishing = None
                    for reply in replies:
                        if isinstance(reply, RedisReplyError):
                            raise reply
                except Exception as exc:
                    lost = sum(len(ops) for ops in batches.values())
                    reason = (link.lost if link is not None else "") or _reason(exc)
                    self._unavailable(
                        f"Redis unavailable: {lost} ops for {len(batches)} nodes "
                        f"not delivered ({reason})"
                    )
                    self._publishing = None
                    if link is not None:
                        await link.aclose()
                        link = None
                self._sent.set()
                self._sent = trio.Event()
        finally:
            if link is not None:
                await link.aclose()

    async def forwarding_done(self, quiet: float = 0.25) -> None:
        """Until no signal has had to be sent on for ``quiet`` seconds: a draining
        node's last handovers race signals other nodes sent it before they
        learnt of the move (those arrive within a flush or two)."""
        if not self._forwarded:
            return
        while True:
            self._forwarding = trio.Event()
            with trio.move_on_after(quiet):
                await self._forwarding.wait()
                continue
            return

    async def flushed(self) -> None:
        """Until every op queued so far has been published (or given up): a
        draining node's last handovers must leave before it does."""
        while self._outgoing or self._publishing is not None:
            await self._sent.wait()

    # --- receiving ---------------------------------------------------------------

    async def _listen(self, task_status: trio.TaskStatus[None]) -> None:
        """Subscribe to this node's channel; after a Redis outage, subscribe again.

        Every message one read brought is parsed before any is applied
        (`RespLink.receive`). A link that stays silent for a third of the node
        TTL is sent a PING; one that does not answer by the next third counts
        as lost (`_keep_alive`), so a Redis gone without a FIN is noticed too.
        """
        started = False
        delay = 0.1
        idle = self.directory.heartbeat_ttl / 3
        while True:
            link: RespLink | None = None
            try:
                with trio.move_on_after(idle) as slow:
                    link = await RespLink.open(self.url)
                    (reply,) = await link.call([command("SUBSCRIBE", self.directory.channel)])
                if slow.cancelled_caught or link is None:
                    raise TimeoutError(f"no answer to SUBSCRIBE within {idle:g} s")
                if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                    raise RedisReplyError(f"SUBSCRIBE answered {reply!r}")
                self.listening = True
                if delay > 0.1:
                    log.info("Redis subscription restored")
                delay = 0.1
                if not started:
                    started = True
                    task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._keep_alive, link, idle, nursery.cancel_scope)
                    while True:
                        for message in await link.receive():
                            if (
                                type(message) is list
                                and len(message) == 3
                                and (message[0] == b"message")
                            ):
                                self._receive(message[2])
                # only the keep-alive ends the loop above without an exception
                raise TimeoutError(link.lost)
            except Exception as exc:
                self.listening = False
                self._unavailable(
                    f"Redis subscription lost ({_reason(exc)}); retrying with backoff",
                    once=True,
                )
            finally:
                if link is not None:
                    await link.aclose()
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _keep_alive(self, link: RespLink, idle: float, scope: trio.CancelScope) -> None:
        """PING a link that stayed quiet for ``idle`` seconds; end it (`RespLink.lost`)
        if nothing came back by the next ``idle``. One task per link, not a timeout
        around every read."""
        while True:
            seen = link.received
            await trio.sleep(idle)
            if link.received == seen:
                await link.send([command("PING")])
                await trio.sleep(idle)
                if link.received == seen:
                    link.lost = f"no answer to PING within {idle:g} s"
                    scope.cancel()
                    return

    def _receive(self, data: bytes) -> None:
        """Apply one published batch of ops."""
        try:
            ops = _decode_ops(data)
        except msgspec.DecodeError:
            log.error("a Pub/Sub message on %s is not a batch of ops", self.directory.channel)
            return
        for op in ops:
            try:
                self._apply(op)
            except Exception:
                log.exception("could not apply op %r", op.__struct_config__.tag)

    def _apply(self, op: Op) -> None:
        if type(op) is Relay:
            connection = self.hub.by_connection_id.get(op.connection_id)
            if connection is not None and connection.away is None:
                connection.deliver(_decode_frame(op.frame))
            elif (forwarded := self._forwarded.get(op.connection_id)) is not None:
                # resumed elsewhere (protocol/SPEC.md §10); its old connection
                # here may still be closing
                self.send(forwarded[0], op)
                self._forwarding.set()
            elif (away := self.hub.resumes.get(op.connection_id)) is not None:
                away.hold(_decode_frame(op.frame))  # away: held for its resume
            elif (arriving := self._arriving.get(op.connection_id)) is not None:
                arriving.deliver(_decode_frame(op.frame))  # resuming here
        elif type(op) is Claim:
            self._claimed(op)
        elif type(op) is Handover or type(op) is Refused:
            arriving = self._claims.pop(op.claim_id, None)
            if arriving is not None:
                arriving.reply = op
                if type(op) is Handover:
                    self._arriving[op.connection_id] = arriving
                    # seats this replica learnt of since the claim left (another
                    # resume here saw them in Redis) wait here too from now on
                    registry = self.hub.registry
                    for session_id in op.sessions:
                        current = registry.seat(session_id, arriving.user_id)
                        if (
                            isinstance(current, RemotePeer)
                            and current.connection_id == op.connection_id
                        ):
                            arriving.wait_in(registry, session_id, current)
                arriving.done.set()
        elif type(op) is Moved:
            current = self.hub.registry.seat(op.session_id, op.user_id)
            if isinstance(current, RemotePeer) and (current.node, current.connection_id) == (
                op.from_node,
                op.connection_id,
            ):
                seat = Seat(op.to_node, op.connection_id)
                self.hub.registry.place(op.session_id, RemotePeer(self, op.user_id, seat))
        elif type(op) is Joined:
            seat = Seat(op.node, op.connection_id)
            self._joined(op.session_id, op.user_id, seat, op.previous_node, op.previous_id)
        elif type(op) is Left:
            self._left(op.session_id, op.user_id, Seat(op.node, op.connection_id))

    def _local_peers(self, session_id: str) -> list[Any]:
        return [
            member
            for member in self.hub.registry.members(session_id)
            if not getattr(member, "is_remote", True)
        ]

    def _joined(
        self, session_id: str, user_id: str, seat: Seat, previous_node: str, previous_id: str
    ) -> None:
        registry = self.hub.registry
        current = registry.seat(session_id, user_id)
        if (
            previous_node == self.node
            and current is not None
            and not current.is_remote  # type: ignore[attr-defined]
            and getattr(current, "connection_id", None) == previous_id
        ):
            current.evict(session_id)
        if not self._local_peers(session_id) and current is None:
            return
        if isinstance(current, RemotePeer) and (current.node, current.connection_id) == (
            seat.node,
            seat.connection,
        ):
            return  # known already (a node registering again after a Redis outage)
        registry.place(session_id, RemotePeer(self, user_id, seat))
        joined = UserJoined(session_id=session_id, user_id=user_id)
        for peer in self._local_peers(session_id):
            peer.deliver(joined)

    def _left(self, session_id: str, user_id: str, seat: Seat) -> None:
        registry = self.hub.registry
        current = registry.seat(session_id, user_id)
        if not isinstance(current, RemotePeer) or (current.node, current.connection_id) != (
            seat.node,
            seat.connection,
        ):
            return
        registry.unseat(session_id, user_id)
        left = UserLeft(session_id=session_id, user_id=user_id)
        for peer in self._local_peers(session_id):
            peer.deliver(left)
        registry.forget_if_remote_only(session_id)

    # --- resume across nodes (protocol/SPEC.md §10) ------------------------------------

    def resume_token(self, connection_id: str, secret: str) -> str:
        """A resume token that names this node and the connection, so any node
        knows whom to ask (the secret is what makes it the client's)."""
        return f"r.{self.node}.{connection_id}.{secret}"

    def _claimed(self, op: Claim) -> None:
        """Another node's new connection resumes one of ours: hand it over."""
        hub = self.hub
        away = hub.take_away(op.token, op.user_id)
        if away is None:
            self.send(op.node, Refused(op.claim_id))
            return
        peer = away.peer
        sessions = sorted(peer.sessions)
        seat = Seat(op.node, peer.connection_id)
        registry = hub.registry
        # From this moment the seats are the claimer's: our replica points there,
        # and what still arrives here for the connection is sent on.
        for session_id in sessions:
            if registry.seat(session_id, peer.user_id) is peer:
                registry.place(session_id, RemotePeer(self, peer.user_id, seat))
            registry.forget_if_remote_only(session_id)
        peer.sessions.clear()
        peer.closed = True
        until = trio.current_time() + max(hub.settings.resume_window, CLAIM_TIMEOUT)
        self._forwarded[peer.connection_id] = (op.node, until)
        log.info(
            "resumed on node %s: %d session%s handed over, %d held frame%s",
            op.node,
            len(sessions),
            "" if len(sessions) == 1 else "s",
            len(away.held),
            "" if len(away.held) == 1 else "s",
            extra=peer.log_ids(),
        )
        self.send(op.node, Handover(op.claim_id, peer.connection_id, sessions, list(away.held)))

    def holds_elsewhere(self, token: str) -> bool:
        """Whether ``token`` names a connection of another node."""
        holder = token_holder(token)
        return holder is not None and holder[0] != self.node

    async def resume(
        self, token: str, user_id: str
    ) -> tuple[str, list[str], list[ServerFrame]] | None:
        """Ask the node that holds ``token``'s connection for it. Granted: its
        connection id, the sessions it is back in (moved here in Redis and in
        this node's replica) and the frames for it, in order (those the old
        node held, then those that arrived here meanwhile). None if refused,
        or if that node does not answer within `CLAIM_TIMEOUT` (dead)."""
        holder = token_holder(token)
        if holder is None or holder[0] == self.node or not self.healthy:
            return None
        node, connection_id = holder
        registry = self.hub.registry
        arriving = _Arriving(user_id, connection_id, self.hub.settings.outbox_frames)
        # Signals local participants send it from now on wait here, in order,
        # instead of going to the old node and racing back.
        for session_id in registry.sessions_of(user_id):
            current = registry.seat(session_id, user_id)
            if isinstance(current, RemotePeer) and (current.node, current.connection_id) == holder:
                arriving.wait_in(registry, session_id, current)
        claim_id = secrets.token_hex(8)
        self._claims[claim_id] = arriving
        self.send(node, Claim(token, user_id, self.node, claim_id))
        with trio.move_on_after(CLAIM_TIMEOUT):
            await arriving.done.wait()
        self._claims.pop(claim_id, None)
        reply = arriving.reply
        if type(reply) is not Handover or arriving.overflowed:
            self._arriving.pop(connection_id, None)
            self._restore(arriving)
            return None
        sessions = []
        for session_id in reply.sessions:
            try:
                if await self._move_here(session_id, user_id, Seat(node, connection_id)):
                    sessions.append(session_id)
            except Exception as exc:
                self._unavailable(f"Redis unavailable for a resume: {_reason(exc)}")
                sessions.append(session_id)  # the replicas know; Redis catches up later
        frames = [_decode_frame(message) for message in reply.held] + arriving.buffer
        return connection_id, sessions, frames

    def _claiming(self, user_id: str, connection_id: str) -> _Arriving | None:
        """The resume under way on this node for that connection, if any."""
        for arriving in (*self._claims.values(), *self._arriving.values()):
            if (arriving.user_id, arriving.connection_id) == (user_id, connection_id):
                return arriving
        return None

    def installed(self, connection_id: str) -> None:
        """The resumed connection is live here: what arrives for it goes to it
        (a seat it did not get back loses its placeholder)."""
        arriving = self._arriving.pop(connection_id, None)
        if arriving is None:
            return
        registry = self.hub.registry
        for session_id in arriving.placeholders:
            if isinstance(registry.seat(session_id, arriving.user_id), _Placeholder):
                registry.unseat(session_id, arriving.user_id)

    def _restore(self, arriving: _Arriving) -> None:
        registry = self.hub.registry
        for session_id, seat in arriving.placeholders.items():
            current = registry.seat(session_id, arriving.user_id)
            if isinstance(current, _Placeholder):
                registry.place(session_id, seat)
        old = next(iter(arriving.placeholders.values()), None)
        if old is None:
            return
        for frame in arriving.buffer:  # to the old node, as they would have gone
            with contextlib.suppress(InternalError):
                old.deliver(frame)

    async def _move_here(self, session_id: str, user_id: str, holder: Seat) -> bool:
        """Seat ``user_id`` here in Redis and tell the other nodes (no news for
        anyone); False if another connection took the seat meanwhile."""
        seats = await self.directory.move(session_id, user_id, holder)
        if seats is None:
            return False
        registry = self.hub.registry
        for other, seat in seats.items():
            if other == user_id or seat.node == self.node:
                continue
            current = registry.seat(session_id, other)
            if current is not None and (
                not getattr(current, "is_remote", True) or isinstance(current, _Placeholder)
            ):
                # here already (it resumed here meanwhile, or is resuming): Redis's
                # answer may predate that move
                continue
            if not isinstance(current, RemotePeer) or current.connection_id != seat.connection:
                remote = RemotePeer(self, other, seat)
                claiming = self._claiming(other, seat.connection)
                if claiming is not None:  # its own resume here is under way: wait with it
                    claiming.wait_in(registry, session_id, remote)
                else:
                    registry.place(session_id, remote)
        op = Moved(session_id, user_id, holder.connection, holder.node, self.node)
        for node in {seat.node for seat in seats.values()} - {self.node}:
            self.send(node, op)
        return True

    # --- membership from this node's connections --------------------------------------

    async def join(self, connection: Connection, frame: JoinSession) -> None:
        """Take the seat in Redis first, then in the local replica (the core's rules)."""
        peer = connection.peer
        assert peer is not None
        registry = self.hub.registry
        session_id = frame.session_id
        if registry.seat(session_id, peer.user_id) is connection.peer:
            peer.handle(frame)  # a re-join changes nothing
            return
        try:
            result = await self.directory.join(
                session_id, peer.user_id, peer.connection_id, registry.max_participants
            )
        except Exception as exc:
            self._unavailable(f"Redis unavailable for a join: {_reason(exc)}")
            connection.deliver(
                InternalError("sessions are unavailable right now (Redis); try again").to_frame(
                    frame.id
                )
            )
            return
        if result.full:
            connection.deliver(
                SessionFull(
                    f"session {session_id!r} has its maximum of "
                    f"{registry.max_participants} participants"
                ).to_frame(frame.id)
            )
            return
        for user_id, seat in result.seats.items():
            if seat.node != self.node:
                current = registry.seat(session_id, user_id)
                if not isinstance(current, RemotePeer) or current.connection_id != seat.connection:
                    registry.place(session_id, RemotePeer(self, user_id, seat))
        peer.handle(frame)
        previous = result.previous
        op = Joined(
            session_id,
            peer.user_id,
            self.node,
            peer.connection_id,
            previous.node if previous else "",
            previous.connection if previous else "",
        )
        nodes = {seat.node for seat in result.seats.values()}
        if previous is not None:
            nodes.add(previous.node)
        for node in nodes - {self.node}:
            self.send(node, op)

    def leaving(self, peer: Peer, sessions: list[str]) -> None:
        """``peer`` left ``sessions`` (or disconnected): free the seats in Redis."""
        self._departures_in.send_nowait((peer.user_id, peer.connection_id, sessions))

    async def _departures(self) -> None:
        async for user_id, connection_id, sessions in self._departures_out:
            for session_id in sessions:
                try:
                    remaining = await self.directory.leave(session_id, user_id, connection_id)
                except Exception as exc:
                    self._unavailable(f"Redis unavailable for a leave: {_reason(exc)}")
                    continue
                self.hub.registry.forget_if_remote_only(session_id)
                if remaining is None:
                    continue
                op = Left(session_id, user_id, self.node, connection_id)
                for node in {seat.node for seat in remaining.values()} - {self.node}:
                    self.send(node, op)

    async def _watch_publishing(self) -> None:
        """Break the publishing link when a flush's replies are a third of the node
        TTL late (a Redis gone without a FIN): the flusher logs the loss and
        reconnects. One task for all flushes, not a timeout scope around each."""
        limit = self.directory.heartbeat_ttl / 3
        while True:
            await trio.sleep(limit / 2)
            if self._publishing is None:
                continue
            link, since = self._publishing
            if trio.current_time() - since > limit:
                link.lost = f"no answer to PUBLISH within {limit:g} s"
                link.abort()

    async def _heartbeat(self) -> None:
        interval = self.directory.heartbeat_ttl / 3
        while True:
            try:
                await self.directory.beat()
                if not self.healthy and self.listening:
                    await self._register_again()
                freed = await self.directory.reap()
            except Exception as exc:
                self._unavailable(f"Redis unavailable: {_reason(exc)}; retrying", once=True)
                freed = []
            else:
                if self.listening:
                    if not self.healthy:
                        log.info("Redis is back; this node's participants are registered again")
                    self.healthy = True
            now = trio.current_time()
            for connection_id, (_, until) in list(self._forwarded.items()):
                if now >= until:
                    del self._forwarded[connection_id]
            for session_id, user_id, holder, remaining in freed:
                log.info("node %s is gone: freeing %s in %s", holder.node, user_id, session_id)
                op = Left(session_id, user_id, holder.node, holder.connection)
                self._apply(op)
                for node in {seat.node for seat in remaining.values()} - {self.node}:
                    self.send(node, op)
            await trio.sleep(interval)

    def _unavailable(self, message: str, *, once: bool = False) -> None:
        """Redis failed: the one place an outage is noted (the node turns unhealthy
        until the heartbeat finds Redis back and says so). ``once``: a failure
        that repeats on its own (the subscription's retries, the heartbeat) is
        an error only when it starts the outage, debug after that."""
        level = logging.ERROR if self.healthy or not once else logging.DEBUG
        self.healthy = False
        log.log(level, "%s", message)

    async def _register_again(self) -> None:
        """After a Redis outage: seat this node's participants again, tell the others."""
        registry = self.hub.registry
        for connection in list(self.hub.connections):
            peer = connection.peer
            if peer is None or peer.closed:
                continue
            for session_id in list(peer.sessions):
                result = await self.directory.join(
                    session_id, peer.user_id, peer.connection_id, 1 << 30
                )
                for user_id, seat in result.seats.items():
                    if seat.node != self.node and registry.seat(session_id, user_id) is None:
                        self._joined(session_id, user_id, seat, "", "")
                op = Joined(session_id, peer.user_id, self.node, peer.connection_id)
                for node in {seat.node for seat in result.seats.values()} - {self.node}:
                    self.send(node, op)

    async def serve(
        self,
        after_round: list[Callable[[float], None]] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the node's Redis side: heartbeat, reaper, listener, flusher.

        ``after_round``: hooks run after every round of the transport's reads
        (`signaling.server.transports.ws.Reactor.after_round`, handed in by
        the app): the flush linger ends on that clock while traffic flows.
        """
        after_round = [] if after_round is None else after_round
        after_round.append(self._after_round)
        try:
            async with self.directory, trio.open_nursery() as nursery:
                await self.directory.beat()
                await nursery.start(self._listen)
                nursery.start_soon(self._flush_loop)
                nursery.start_soon(self._watch_publishing)
                nursery.start_soon(self._departures)
                nursery.start_soon(self._heartbeat)
                log.info("node %s joined the cluster", self.node)
                task_status.started()
        finally:
            after_round.remove(self._after_round)


def _reason(exc: BaseException) -> str:
    """An exception as a log line's cause: its message, or its type when it has none."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
