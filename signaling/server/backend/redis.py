"""The seat directory shared by all nodes, in Redis (coredis, on trio via anyio).

Keys (one Redis; every change is one Lua script, so two nodes never see a
half-done join, leave or reap):

- ``sig:s:{session}``: hash ``userId`` → ``"{node}|{connection}"``, the seats.
- ``sig:ns:{node}``: set of ``"{session}\\0{userId}"`` seats a node holds.
- ``sig:n:{node}``: the node's heartbeat, a key that expires after ``ttl``.
- ``sig:nodes``: set of node ids that registered.
- ``sig:c:{node}``: the Pub/Sub channel other nodes publish to for this node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import coredis

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["RedisDirectory", "Seat", "ping"]

_JOIN = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if (not prev) and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return {'full'}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
if prev and prev ~= ARGV[2] then
  local node = string.match(prev, '^([^|]*)|')
  if node and node ~= ARGV[5] then redis.call('SREM', 'sig:ns:' .. node, ARGV[4]) end
end
return {'ok', prev or '', redis.call('HGETALL', KEYS[1])}
"""

_LEAVE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[3])
return redis.call('HGETALL', KEYS[1])
"""

_MOVE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return false end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('SREM', 'sig:ns:' .. ARGV[5], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[4])
return redis.call('HGETALL', KEYS[1])
"""

_REAP = """
if redis.call('EXISTS', 'sig:n:' .. ARGV[1]) == 1 then return {} end
local out = {}
for _, seat in ipairs(redis.call('SMEMBERS', 'sig:ns:' .. ARGV[1])) do
  local session, user = string.match(seat, '^(.*)%z(.*)$')
  local key = 'sig:s:' .. session
  local holder = redis.call('HGET', key, user)
  if holder and string.sub(holder, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then
    redis.call('HDEL', key, user)
    table.insert(out, {session, user, holder, redis.call('HGETALL', key)})
  end
end
redis.call('DEL', 'sig:ns:' .. ARGV[1])
redis.call('SREM', 'sig:nodes', ARGV[1])
return out
"""


async def ping(url: str) -> None:
    """Raise unless the Redis at ``url`` answers."""
    async with coredis.Redis.from_url(url) as redis:
        await redis.ping()


@dataclass(frozen=True)
class Seat:
    """Who holds a seat: a connection on a node."""

    node: str
    connection: str

    @classmethod
    def parse(cls, holder: str) -> Seat:
        """From the ``"{node}|{connection}"`` stored in Redis."""
        node, _, connection = holder.partition("|")
        return cls(node, connection)

    def __str__(self) -> str:
        return f"{self.node}|{self.connection}"


@dataclass(frozen=True)
class JoinResult:
    """A join's outcome: refused (full), and who held the seat and who else sits there."""

    full: bool
    previous: Seat | None
    seats: dict[str, Seat]


def _pairs(flat: list[Any]) -> dict[str, Seat]:
    items = [x.decode() if isinstance(x, bytes) else str(x) for x in flat]
    return {items[i]: Seat.parse(items[i + 1]) for i in range(0, len(items), 2)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisDirectory:
    """Seats of every node, with node heartbeats; one instance per node."""

    def __init__(self, url: str, node: str, *, heartbeat_ttl: float = 15.0) -> None:
        self.node = node
        self.heartbeat_ttl = heartbeat_ttl
        self.redis: coredis.Redis[bytes] = coredis.Redis.from_url(url)

    async def __aenter__(self) -> RedisDirectory:
        await self.redis.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.redis.__aexit__(exc_type, exc, traceback)

    @property
    def channel(self) -> str:
        """This node's Pub/Sub channel."""
        return f"sig:c:{self.node}"

    async def beat(self) -> None:
        """Announce this node alive for ``heartbeat_ttl`` seconds."""
        await self.redis.set(f"sig:n:{self.node}", "1", px=int(self.heartbeat_ttl * 1000))
        await self.redis.sadd("sig:nodes", [self.node])

    async def join(self, session: str, user: str, connection: str, cap: int) -> JoinResult:
        """Seat ``user`` (this node's ``connection``) in ``session``, atomically."""
        reply = await self.redis.eval(
            _JOIN,
            keys=[f"sig:s:{session}", f"sig:ns:{self.node}"],
            args=[user, f"{self.node}|{connection}", str(cap), f"{session}\0{user}", self.node],
        )
        assert isinstance(reply, list)
        if _text(reply[0]) == "full":
            return JoinResult(True, None, {})
        previous = _text(reply[1])
        return JoinResult(False, Seat.parse(previous) if previous else None, _pairs(reply[2]))

    async def leave(self, session: str, user: str, connection: str) -> dict[str, Seat] | None:
        """Free the seat if this connection holds it; the seats left, or None."""
        reply = await self.redis.eval(
            _LEAVE,
            keys=[f"sig:s:{session}", f"sig:ns:{self.node}"],
            args=[user, f"{self.node}|{connection}", f"{session}\0{user}"],
        )
        return None if reply is None else _pairs(list(reply))  # type: ignore[arg-type]

    async def move(self, session: str, user: str, holder: Seat) -> dict[str, Seat] | None:
        """Move ``user``'s seat held by ``holder`` (another node's connection) to
        this node, same connection id (a resume, protocol/SPEC.md §10): the
        seats after it, or None if ``holder`` no longer holds it."""
        reply = await self.redis.eval(
            _MOVE,
            keys=[f"sig:s:{session}", f"sig:ns:{self.node}"],
            args=[
                user,
                str(holder),
                f"{self.node}|{holder.connection}",
                f"{session}\0{user}",
                holder.node,
            ],
        )
        return None if reply is None else _pairs(list(reply))  # type: ignore[arg-type]

    async def seats(self, session: str) -> dict[str, Seat]:
        """Everyone seated in ``session``."""
        return _pairs(_flatten(await self.redis.hgetall(f"sig:s:{session}")))

    async def reap(self) -> list[tuple[str, str, Seat, dict[str, Seat]]]:
        """Free the seats of nodes whose heartbeat expired: ``(session, user, holder, left)``.

        Each seat is freed by exactly one caller, whichever node reaps first.
        """
        freed: list[tuple[str, str, Seat, dict[str, Seat]]] = []
        for node in await self.redis.smembers("sig:nodes"):
            name = _text(node)
            if name == self.node:
                continue
            reply: Any = await self.redis.eval(_REAP, keys=[], args=[name])
            for session, user, holder, rest in reply or []:
                freed.append(
                    (_text(session), _text(user), Seat.parse(_text(holder)), _pairs(list(rest)))
                )
        return freed


def _flatten(mapping: Any) -> list[Any]:
    flat: list[Any] = []
    for key, value in dict(mapping).items():
        flat += [key, value]
    return flat
