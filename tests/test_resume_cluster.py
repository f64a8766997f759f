"""Resume over two nodes sharing a real Redis (protocol/SPEC.md §10): a
connection that drops on one node resumes on the other with its seats and the
signals held for it; a rolling restart loses no call and no signal; a node that
dies frees its seats within its bound."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import trio
import trio_websocket

from signaling.client import Reconnected, RelayedIceCandidate, connect
from signaling.frames import UserJoined, UserLeft

from .conftest import TEST_SETTINGS, Server, chromium_call, start_server
from .test_cli import clean_env, free_port, running, serve_command
from .test_resume import SUBPROTOCOL, Raw, next_frame, quiet

CALL = chromium_call()


def candidate(n: int) -> dict[str, Any]:
    return {**CALL["offerCandidates"][0], "sdpMid": str(n)}


@dataclass
class Nodes:
    a: Server
    b: Server


@pytest.fixture
async def nodes(nursery: trio.Nursery, redis_url: str) -> AsyncIterator[Nodes]:
    settings = TEST_SETTINGS.replace(redis_url=redis_url, resume_window=15)
    a = await start_server(nursery, settings)
    b = await start_server(nursery, settings)
    yield Nodes(a, b)
    a.stop.set()
    b.stop.set()


@asynccontextmanager
async def raw(url: str, encoding: str = "json") -> AsyncIterator[Raw]:
    async with trio_websocket.open_websocket_url(url, subprotocols=[SUBPROTOCOL[encoding]]) as ws:
        yield Raw(ws, encoding)


async def until_away(server: Server, count: int = 1) -> None:
    with trio.fail_after(5):
        while len(server.hub.resumes) != count:
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_drop_on_one_node_resumes_on_the_other_with_its_held_signals(
    nodes: Nodes, encoding: str
) -> None:
    async with (
        connect(nodes.a.url, user_id="carol") as carol,  # alice's node
        connect(nodes.b.url, user_id="dave") as dave,  # the node she resumes on
    ):
        await carol.join("s")
        await dave.join("s")
        await next_frame(carol)
        async with raw(nodes.a.url, encoding) as alice:
            await alice.send({"type": "auth", "userId": "alice"})
            welcome = await alice.receive()
            await alice.send({"type": "join-session", "sessionId": "s"})
            await alice.receive()
            await next_frame(carol)
            await next_frame(dave)
            await alice.ws._stream.aclose()  # the network goes
        await until_away(nodes.a)
        # signals for alice from both nodes while she is away: held on node a
        await carol.send_candidate("alice", "s", candidate(0))
        await dave.send_candidate("alice", "s", candidate(1))
        await carol.send_candidate("alice", "s", candidate(2))
        await carol.join("s")  # round trips: each signal reached node a before this
        await dave.join("s")
        await dave.report_state("s", "connected")
        async with raw(nodes.b.url, encoding) as alice:
            await alice.send({"type": "auth", "userId": "alice", "resume": welcome["resumeToken"]})
            back = await alice.receive()
            assert back["resumed"] is True
            assert back["sessions"] == ["s"]
            assert back["connectionId"] == welcome["connectionId"]
            held = [await alice.receive() for _ in range(3)]
            by_sender = {
                sender: [h["data"]["candidate"]["sdpMid"] for h in held if h["from"] == sender]
                for sender in ("carol", "dave")
            }
            # in order per sender (across senders, as when live, arrival decides)
            assert by_sender == {"carol": ["0", "2"], "dave": ["1"]}
            # now on node b: live both ways, with both nodes
            await carol.send_candidate("alice", "s", candidate(3))
            await dave.send_candidate("alice", "s", candidate(4))
            live = sorted(
                [(await alice.receive())["data"]["candidate"]["sdpMid"] for _ in range(2)]
            )
            assert live == ["3", "4"]
            for to in ("carol", "dave"):
                await alice.send(
                    {
                        "type": "ice-candidate",
                        "to": to,
                        "sessionId": "s",
                        "data": {"candidate": candidate(9)},
                    }
                )
            assert isinstance(await next_frame(carol), RelayedIceCandidate)
            assert isinstance(await next_frame(dave), RelayedIceCandidate)
            seats = await nodes.b.hub.cluster.directory.seats("s")  # type: ignore[union-attr]
            assert seats["alice"].node == nodes.b.hub.cluster.node  # type: ignore[union-attr]
            # nobody heard anything of the drop or the move
            assert await quiet(carol) == []
            assert await quiet(dave) == []
        # alice's close (1000) on node b: she leaves, both nodes hear it once
        assert await next_frame(carol) == UserLeft(session_id="s", user_id="alice")
        assert await next_frame(dave) == UserLeft(session_id="s", user_id="alice")
    assert nodes.b.hub.stats.resumes["resumed"] == 1


async def test_a_foreign_claim_across_nodes_is_refused_and_the_owner_still_resumes(
    nodes: Nodes,
) -> None:
    async with raw(nodes.a.url) as alice:
        await alice.send({"type": "auth", "userId": "alice"})
        token = (await alice.receive())["resumeToken"]
        await alice.send({"type": "join-session", "sessionId": "s"})
        await alice.receive()
        await alice.ws._stream.aclose()
    await until_away(nodes.a)
    async with raw(nodes.b.url) as mallory:
        await mallory.send({"type": "auth", "userId": "mallory", "resume": token})
        assert (await mallory.receive())["resumed"] is False
    async with raw(nodes.b.url) as alice:
        await alice.send({"type": "auth", "userId": "alice", "resume": token})
        assert (await alice.receive())["resumed"] is True


async def test_the_window_ends_with_user_left_once_on_every_node(
    nursery: trio.Nursery, redis_url: str
) -> None:
    settings = TEST_SETTINGS.replace(redis_url=redis_url, resume_window=0.5)
    a = await start_server(nursery, settings)
    b = await start_server(nursery, settings)
    async with connect(b.url, user_id="dave") as dave:
        await dave.join("s")
        async with raw(a.url) as alice:
            await alice.send({"type": "auth", "userId": "alice"})
            await alice.receive()
            await alice.send({"type": "join-session", "sessionId": "s"})
            await alice.receive()
            await next_frame(dave)
            await alice.ws._stream.aclose()
        assert await next_frame(dave) == UserLeft(session_id="s", user_id="alice")
        assert await quiet(dave, 1.0) == []
    a.stop.set()
    b.stop.set()


async def test_a_rolling_restart_loses_no_call_and_no_signal(
    nursery: trio.Nursery, redis_url: str
) -> None:
    """Two nodes behind a "load balancer" (the clients' open_stream goes to the
    node that is up); each is drained (SIGTERM's path: 1001) and started again
    in turn. Nobody hears user-left or user-joined, and every signal sent while
    a node drains arrives, in order."""
    settings = TEST_SETTINGS.replace(redis_url=redis_url, resume_window=15, graceful_timeout=5)
    a = await start_server(nursery, settings)
    b = await start_server(nursery, settings)
    target = {"alice": a.port, "bob": b.port}

    def balancer(user: str) -> Any:
        async def open_stream(host: str, port: int) -> trio.abc.Stream:
            return await trio.open_tcp_stream("127.0.0.1", target[user])

        return open_stream

    async with (
        connect(a.url, user_id="alice", reconnect=True, open_stream=balancer("alice")) as alice,
        connect(b.url, user_id="bob", reconnect=True, open_stream=balancer("bob")) as bob,
    ):
        await alice.join("call")
        await bob.join("call")
        assert await next_frame(alice) == UserJoined(session_id="call", user_id="bob")
        sent = 0

        async def exchange() -> None:
            nonlocal sent
            for _ in range(3):
                await bob.send_candidate("alice", "call", candidate(sent))
                sent += 1

        async def candidates_and_resume(count: int) -> list[Any]:
            """alice's next ``count`` candidates, and her Reconnected (resumed) among
            them: a candidate may beat the drain to her old connection."""
            frames: list[Any] = []
            with trio.fail_after(10):
                while len([f for f in frames if isinstance(f, RelayedIceCandidate)]) < count or (
                    not any(isinstance(f, Reconnected) for f in frames)
                ):
                    frames.append(await alice.receive())
            (event,) = [f for f in frames if isinstance(f, Reconnected)]
            assert event.resumed
            return [f for f in frames if not isinstance(f, Reconnected)]

        # node a drains: alice goes to node b
        target["alice"] = b.port
        a.stop.set()
        await exchange()  # while a drains
        got = await candidates_and_resume(3)
        # a starts again (a new process would: same Redis, a new node id)
        a = await start_server(nursery, settings)
        # node b drains: both go to the new node a
        target["alice"] = target["bob"] = a.port
        b.stop.set()
        with trio.fail_after(10):
            bob_back = await bob.receive()
        assert isinstance(bob_back, Reconnected)
        assert bob_back.resumed
        await exchange()  # as soon as bob is back
        got += await candidates_and_resume(3)
        assert [g.data["candidate"]["sdpMid"] for g in got] == [str(n) for n in range(6)]
        # no membership news anywhere
        assert await quiet(alice) == []
        assert await quiet(bob) == []
    a.stop.set()


async def test_a_dead_nodes_away_seats_are_freed_within_its_bound(
    nursery: trio.Nursery, redis_url: str
) -> None:
    """Node death (SIGKILL) takes the held signals with it: a resume on the
    other node is refused after the claim times out, and the dead node's seats
    go within its TTL as before."""
    settings = TEST_SETTINGS.replace(redis_url=redis_url, node_ttl=1.0, resume_window=15)
    b = await start_server(nursery, settings)
    port = free_port()
    command = serve_command(port, "--redis-url", redis_url, "--node-ttl", "1")
    async with (
        running(command, clean_env(), b"listening on") as node_a,
        connect(b.url, user_id="dave") as dave,
    ):
        await dave.join("s")
        async with raw(f"ws://127.0.0.1:{port}/ws") as alice:
            await alice.send({"type": "auth", "userId": "alice"})
            token = (await alice.receive())["resumeToken"]
            await alice.send({"type": "join-session", "sessionId": "s"})
            await alice.receive()
            await next_frame(dave)
            node_a.process.send_signal(signal.SIGKILL)
            start = trio.current_time()
            with trio.fail_after(10):
                assert await dave.receive() == UserLeft(session_id="s", user_id="alice")
            assert trio.current_time() - start <= 1.0 + 1.0  # ttl + one heartbeat period
        async with raw(b.url) as alice:
            await alice.send({"type": "auth", "userId": "alice", "resume": token})
            assert (await alice.receive())["resumed"] is False
    b.stop.set()


def test_resume_ops_travel_as_tagged_arrays() -> None:
    from signaling.server.cluster import Claim, Handover, Moved, Op, Refused, token_holder

    ops: list[Op] = [
        Claim("r.n1.c_1.s", "alice", "n2", "k"),
        Handover("k", "c_1", ["s"], [b"\x80"]),
        Refused("k"),
        Moved("s", "alice", "c_1", "n1", "n2"),
    ]
    wire = msgspec.msgpack.encode(ops)
    assert msgspec.msgpack.decode(wire) == [
        ["c", "r.n1.c_1.s", "alice", "n2", "k"],
        ["h", "k", "c_1", ["s"], [b"\x80"]],
        ["f", "k"],
        ["m", "s", "alice", "c_1", "n1", "n2"],
    ]
    assert msgspec.msgpack.decode(wire, type=list[Op]) == ops
    assert token_holder("r.n1.c_1.secret") == ("n1", "c_1")
    assert token_holder("r_secret") is None
    assert token_holder("r..c.s") is None


async def test_across_nodes_a_token_works_once_and_takes_over_a_half_open_connection(
    nodes: Nodes,
) -> None:
    async with connect(nodes.a.url, user_id="carol") as carol:
        await carol.join("s")
        async with raw(nodes.a.url) as old:
            await old.send({"type": "auth", "userId": "alice"})
            token = (await old.receive())["resumeToken"]
            await old.send({"type": "join-session", "sessionId": "s"})
            await old.receive()
            await next_frame(carol)
            # node a still thinks `old` is open; the client resumes on node b
            async with raw(nodes.b.url) as alice:
                await alice.send({"type": "auth", "userId": "alice", "resume": token})
                back = await alice.receive()
                assert back["resumed"] is True
                assert back["sessions"] == ["s"]
                with pytest.raises(trio_websocket.ConnectionClosed):
                    await old.receive()  # closed by node a (1000: resumed elsewhere)
                async with raw(nodes.b.url) as again:
                    await again.send({"type": "auth", "userId": "alice", "resume": token})
                    assert (await again.receive())["resumed"] is False  # once
                await carol.send_candidate("alice", "s", candidate(7))
                relayed = await alice.receive()
                assert relayed["data"]["candidate"]["sdpMid"] == "7"
        assert await next_frame(carol) == UserLeft(session_id="s", user_id="alice")
        assert await quiet(carol) == []


async def test_a_hold_that_overflows_on_its_node_ends_the_window_for_every_node(
    nursery: trio.Nursery, redis_url: str
) -> None:
    settings = TEST_SETTINGS.replace(redis_url=redis_url, resume_window=15, outbox_frames=4)
    a = await start_server(nursery, settings)
    b = await start_server(nursery, settings)
    async with connect(b.url, user_id="dave") as dave:
        await dave.join("s")
        async with raw(a.url, "msgpack") as alice:
            await alice.send({"type": "auth", "userId": "alice"})
            token = (await alice.receive())["resumeToken"]
            await alice.send({"type": "join-session", "sessionId": "s"})
            await alice.receive()
            await next_frame(dave)
            await alice.ws._stream.aclose()
        await until_away(a)
        for n in range(5):  # the fifth is one over the hold, on node a
            await dave.send_candidate("alice", "s", candidate(n))
        with trio.fail_after(5):
            assert await dave.receive() == UserLeft(session_id="s", user_id="alice")
        async with raw(b.url, "msgpack") as alice:
            await alice.send({"type": "auth", "userId": "alice", "resume": token})
            assert (await alice.receive())["resumed"] is False
        assert await quiet(dave) == []
    assert a.hub.stats.resume_expiries["overflow"] == 1
    a.stop.set()
    b.stop.set()
