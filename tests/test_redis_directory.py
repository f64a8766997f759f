"""The cross-node seat directory against a real redis-server (issue 6, first step)."""

from __future__ import annotations

import trio

from signaling.server.backend.redis import RedisDirectory, Seat


async def test_join_leave_and_replace_across_nodes(redis_url: str) -> None:
    async with RedisDirectory(redis_url, "n1") as n1, RedisDirectory(redis_url, "n2") as n2:
        first = await n1.join("s", "alice", "c1", cap=16)
        assert (first.full, first.previous, first.seats) == (
            False,
            None,
            {"alice": Seat("n1", "c1")},
        )
        second = await n2.join("s", "bob", "c2", cap=16)
        assert second.seats == {"alice": Seat("n1", "c1"), "bob": Seat("n2", "c2")}
        # alice again from node 2 takes the seat from node 1's connection
        again = await n2.join("s", "alice", "c3", cap=16)
        assert again.previous == Seat("n1", "c1")
        assert await n2.seats("s") == {"alice": Seat("n2", "c3"), "bob": Seat("n2", "c2")}
        # the replaced connection's leave changes nothing
        assert await n1.leave("s", "alice", "c1") is None
        assert await n2.leave("s", "alice", "c3") == {"bob": Seat("n2", "c2")}
        assert await n2.leave("s", "bob", "c2") == {}
        assert await n1.seats("s") == {}


async def test_cap_refuses_a_new_user_but_not_a_seated_one(redis_url: str) -> None:
    async with RedisDirectory(redis_url, "n1") as n1:
        await n1.join("s", "a", "c1", cap=2)
        await n1.join("s", "b", "c2", cap=2)
        assert (await n1.join("s", "c", "c3", cap=2)).full
        assert not (await n1.join("s", "a", "c4", cap=2)).full


async def test_a_dead_nodes_seats_are_freed_exactly_once(redis_url: str) -> None:
    async with (
        RedisDirectory(redis_url, "n1", heartbeat_ttl=30) as n1,
        RedisDirectory(redis_url, "n2", heartbeat_ttl=30) as n2,
        RedisDirectory(redis_url, "n3", heartbeat_ttl=30) as n3,
    ):
        for node in (n1, n2, n3):
            await node.beat()
        await n1.join("s", "alice", "c1", cap=16)
        await n2.join("s", "bob", "c2", cap=16)
        await n2.join("t", "bob", "c2", cap=16)
        await n3.join("t", "carol", "c3", cap=16)
        assert await n1.reap() == []  # everyone is alive
        # node 2 dies without a goodbye: its heartbeat key expires
        await n1.redis.delete(["sig:n:n2"])
        results: list[list[tuple[str, str, Seat, dict[str, Seat]]]] = []

        async def reap(node: RedisDirectory) -> None:
            results.append(await node.reap())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reap, n1)
            nursery.start_soon(reap, n3)
        freed = sorted(item for result in results for item in result)
        assert freed == [
            ("s", "bob", Seat("n2", "c2"), {"alice": Seat("n1", "c1")}),
            ("t", "bob", Seat("n2", "c2"), {"carol": Seat("n3", "c3")}),
        ]
        assert await n1.seats("s") == {"alice": Seat("n1", "c1")}
        assert await n1.reap() == []
