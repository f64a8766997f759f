"""Two nodes sharing one Redis behave as one server (issue 6, first step)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import trio
import trio.testing

from signaling.client import Client, connect
from signaling.errors import InternalError, NotInSession, PeerNotFound, SessionFull
from signaling.frames import (
    Error,
    JoinSession,
    Offer,
    RelayedIceCandidate,
    RelayedOffer,
    UserJoined,
    UserLeft,
)
from signaling.server import Hub, Settings

from .conftest import TEST_SETTINGS, RedisServer, chromium_call, start_server
from .test_cli import clean_env, free_port, running, serve_command

CALL = chromium_call()


async def start_node(nursery: trio.Nursery, settings: Settings) -> tuple[str, Hub, trio.Event]:
    node = await start_server(nursery, settings)
    return node.url, node.hub, node.stop


@pytest.fixture
async def nodes(nursery: trio.Nursery, redis_url: str) -> AsyncIterator[tuple[str, str]]:
    """Two server processes on different ports sharing one Redis."""
    ports = [free_port(), free_port()]
    async with (
        running(
            serve_command(
                ports[0], "--redis-url", redis_url, "--max-participants", "3", "--rate-limit", "0"
            ),
            clean_env(),
            b"listening on",
        ),
        running(
            serve_command(
                ports[1], "--redis-url", redis_url, "--max-participants", "3", "--rate-limit", "0"
            ),
            clean_env(),
            b"listening on",
        ),
    ):
        yield f"ws://127.0.0.1:{ports[0]}/ws", f"ws://127.0.0.1:{ports[1]}/ws"


async def next_frame(client: object) -> object:
    with trio.fail_after(5):
        return await client.receive()  # type: ignore[attr-defined]


@dataclass
class TwoNodes:
    """alice on node a, bob on node b, both in session "s"."""

    alice: Client
    bob: Client
    hub_a: Hub
    hub_b: Hub
    url_a: str


@asynccontextmanager
async def alice_and_bob_on_two_nodes(
    nursery: trio.Nursery, settings: Settings
) -> AsyncIterator[TwoNodes]:
    """Two in-process nodes; alice on the first and bob on the second, both in "s"."""
    url_a, hub_a, stop_a = await start_node(nursery, settings)
    url_b, hub_b, stop_b = await start_node(nursery, settings)
    async with connect(url_a, user_id="alice") as alice, connect(url_b, user_id="bob") as bob:
        await alice.join("s")
        await bob.join("s")
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        yield TwoNodes(alice, bob, hub_a, hub_b, url_a)
    stop_a.set()
    stop_b.set()


async def test_join_relay_leave_across_nodes(nodes: tuple[str, str]) -> None:
    url_a, url_b = nodes
    async with (
        connect(url_a, user_id="alice") as alice,
        connect(url_b, user_id="bob", encoding="msgpack") as bob,
    ):
        await alice.join("s")
        assert (await bob.join("s")).participants == ["alice"]
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        app_fields = {"callId": "c-1", "seq": 2**63, "meta": {"sdp_mid": [1.5, None, True]}}
        await alice.send_offer("bob", "s", CALL["offer"], extra=app_fields)
        offer = await next_frame(bob)
        assert isinstance(offer, RelayedOffer)
        # data as sent, across nodes and from JSON to MessagePack
        assert (offer.from_, offer.data) == ("alice", {"sdp": CALL["offer"], **app_fields})
        for n in range(200):  # order kept across nodes
            await bob.send_candidate("alice", "s", {**CALL["offerCandidates"][0], "sdpMid": str(n)})
        for n in range(200):
            frame = await next_frame(alice)
            assert isinstance(frame, RelayedIceCandidate)
            assert frame.from_ == "bob"
            assert frame.data == {"candidate": {**CALL["offerCandidates"][0], "sdpMid": str(n)}}
        await bob.leave("s")
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")
        with pytest.raises(PeerNotFound):
            await alice.request(Offer(to="bob", session_id="s", data=offer.data))
        with pytest.raises(NotInSession):
            await bob.request(Offer(to="alice", session_id="s", data=offer.data))
        await bob.join("s")
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
    # bob and alice disconnect: nobody is left in Redis


async def test_disconnect_sends_user_left_once_across_nodes(nodes: tuple[str, str]) -> None:
    url_a, url_b = nodes
    async with connect(url_a, user_id="alice") as alice:
        await alice.join("s")
        async with connect(url_b, user_id="bob") as bob:
            await bob.join("s")
            assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        assert await next_frame(alice) == UserLeft(session_id="s", user_id="bob")
        async with connect(url_b, user_id="carol") as carol:
            await carol.join("s")
            assert await next_frame(alice) == UserJoined(session_id="s", user_id="carol")


async def test_replaced_across_nodes(nodes: tuple[str, str]) -> None:
    url_a, url_b = nodes
    async with (
        connect(url_a, user_id="alice") as alice,
        connect(url_a, user_id="bob") as old_bob,
        connect(url_b, user_id="bob") as new_bob,
    ):
        await alice.join("s")
        await old_bob.join("s")
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        assert (await new_bob.join("s")).participants == ["alice"]
        replaced = await next_frame(old_bob)
        assert isinstance(replaced, Error)
        assert (replaced.code, replaced.session_id) == ("replaced", "s")
        # a fresh user-joined, no user-left
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        await alice.send_offer("bob", "s", CALL["offer"])
        assert isinstance(await next_frame(new_bob), RelayedOffer)


async def test_session_cap_counts_every_node(nodes: tuple[str, str]) -> None:
    url_a, url_b = nodes
    async with (
        connect(url_a, user_id="a") as a,
        connect(url_b, user_id="b") as b,
        connect(url_a, user_id="c") as c,
        connect(url_b, user_id="d") as d,
    ):
        for client in (a, b, c):
            await client.join("s")
        with pytest.raises(SessionFull):
            await d.request(JoinSession(session_id="s"))


async def test_killed_node_participants_leave(nursery: trio.Nursery, redis_url: str) -> None:
    settings = TEST_SETTINGS.replace(redis_url=redis_url, node_ttl=1.0)
    url_a, _, stop_a = await start_node(nursery, settings)
    port = free_port()
    command = serve_command(port, "--redis-url", redis_url, "--node-ttl", "1")
    async with (
        running(command, clean_env(), b"listening on") as node_b,
        connect(url_a, user_id="alice") as alice,
    ):
        await alice.join("s")
        async with connect(f"ws://127.0.0.1:{port}/ws", user_id="bob") as bob:
            await bob.join("s")
            assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
            node_b.process.send_signal(signal.SIGKILL)
            start = trio.current_time()
            with trio.fail_after(10):
                assert await alice.receive() == UserLeft(session_id="s", user_id="bob")
            assert trio.current_time() - start <= 1.0 + 1.0  # ttl + one heartbeat period
    stop_a.set()


def test_unreachable_redis_stops_start_up_with_one_line() -> None:
    from .test_cli import run_cli

    result = run_cli("serve", "--port", "0", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("signaling: configuration error: cannot reach REDIS_URL=")
    assert "Traceback" not in result.stderr
    # only ours: no line from the Redis client's own retries before it
    assert len(lines) == 2, lines
    assert "development auth" in lines[0]


async def test_a_redis_outage_is_logged_with_its_cause_once(redis_server: RedisServer) -> None:
    port = free_port()
    command = serve_command(port, "--redis-url", redis_server.url)
    async with running(command, clean_env(), b"listening on") as node:
        async with connect(f"ws://127.0.0.1:{port}/ws", user_id="alice") as alice:
            await alice.join("s")
            await redis_server.stop()
            with trio.fail_after(10), pytest.raises(InternalError, match="unavailable"):
                await alice.join("t")
        node.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await node.process.wait()
            await node.stderr_closed.wait()
    text = node.stderr.decode()
    assert "Traceback" not in text
    assert "NoneType" not in text
    assert "coredis" not in text
    lost = [line for line in text.splitlines() if "Redis subscription lost (" in line]
    assert len(lost) == 1, text  # once per outage, not once per retry
    joins = [line for line in text.splitlines() if "Redis unavailable for a join: " in line]
    assert len(joins) == 1, text
    # the cause, not just an exception's type name
    assert "127.0.0.1" in joins[0].split("for a join: ", 1)[1], joins[0]
    # every line names this node
    assert all(" [node=" in line for line in text.splitlines() if " signaling." in line), text


async def test_redis_going_away_keeps_local_sessions_working(
    nursery: trio.Nursery, redis_url: str
) -> None:
    settings = TEST_SETTINGS.replace(redis_url=redis_url)
    url_a, hub_a, stop_a = await start_node(nursery, settings)
    async with connect(url_a, user_id="alice") as alice, connect(url_a, user_id="bob") as bob:
        await alice.join("s")
        await bob.join("s")
        assert await next_frame(alice) == UserJoined(session_id="s", user_id="bob")
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"SHUTDOWN NOSAVE\r\n")
        await stream.receive_some(100)  # the server closes the connection as it exits
        await stream.aclose()
        # relays between participants of this node never needed Redis
        await alice.send_offer("bob", "s", CALL["offer"])
        assert isinstance(await next_frame(bob), RelayedOffer)
        # a join, which needs Redis, is answered with a clear error, not a hang
        with trio.fail_after(10), pytest.raises(InternalError, match="unavailable"):
            await alice.request(JoinSession(session_id="elsewhere"))
        assert hub_a.connections
    stop_a.set()


async def test_redis_restart_degrades_then_recovers(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    settings = TEST_SETTINGS.replace(redis_url=redis_server.url, node_ttl=0.6)
    async with alice_and_bob_on_two_nodes(nursery, settings) as two:
        alice, bob, hub_a, hub_b = two.alice, two.bob, two.hub_a, two.hub_b
        await redis_server.stop()
        # a relay to the other node is refused plainly while Redis is away
        with trio.fail_after(10):
            while hub_a.cluster.healthy:  # type: ignore[union-attr]
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        with pytest.raises(InternalError, match="Redis is unreachable"):
            await alice.request(Offer(to="bob", session_id="s", data=_sdp()))
        async with httpx.AsyncClient() as http:
            health = (
                await http.get(two.url_a.replace("ws://", "http://").replace("/ws", "/health"))
            ).json()
        assert health["status"] == "degraded"
        await redis_server.start()  # empty: both nodes must register again
        with trio.fail_after(10):
            while not (hub_a.cluster.healthy and hub_b.cluster.healthy):  # type: ignore[union-attr]
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        await alice.send_offer("bob", "s", CALL["offer"])
        frame = await next_frame(bob)
        assert isinstance(frame, RelayedOffer)
        assert frame.from_ == "alice"


def _sdp() -> dict[str, object]:
    return {"sdp": CALL["offer"]}


async def test_a_redis_that_stops_answering_is_noticed_and_survived(
    nursery: trio.Nursery, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # SIGSTOP: the TCP connections stay open, nothing answers (no FIN to notice)
    settings = TEST_SETTINGS.replace(redis_url=redis_server.url, node_ttl=0.6)
    assert redis_server.process is not None
    async with alice_and_bob_on_two_nodes(nursery, settings) as two:
        alice, bob, hub_a, hub_b = two.alice, two.bob, two.hub_a, two.hub_b
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            await alice.send_offer("bob", "s", CALL["offer"])  # its PUBLISH never returns
            with trio.fail_after(10):
                while "no answer to PUBLISH" not in caplog.text or (
                    "no answer to PING" not in caplog.text
                ):
                    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert not hub_a.cluster.healthy  # type: ignore[union-attr]
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        with trio.fail_after(10):
            while not (hub_a.cluster.healthy and hub_b.cluster.healthy):  # type: ignore[union-attr]
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        await alice.send_offer("bob", "s", CALL["offer"])
        frame = await next_frame(bob)
        while not isinstance(frame, RelayedOffer):  # the first offer may arrive late, too
            frame = await next_frame(bob)
        assert frame.from_ == "alice"


async def _publishes(redis_server: RedisServer) -> int:
    """PUBLISH commands the Redis has run so far."""
    stream = await trio.open_tcp_stream("127.0.0.1", redis_server.port)
    await stream.send_all(b"INFO commandstats\r\n")
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data[data.find(b"\r\n") + 2 :]:
            data += await stream.receive_some(65536)
    await stream.aclose()
    for line in data.decode().splitlines():
        if line.startswith("cmdstat_publish:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_a_burst_of_cross_node_signals_shares_one_publish(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    # a long flush window, so that the whole burst surely falls into one
    settings = TEST_SETTINGS.replace(redis_url=redis_server.url, cluster_flush_ms=200.0)
    async with alice_and_bob_on_two_nodes(nursery, settings) as two:
        alice, bob = two.alice, two.bob
        before = await _publishes(redis_server)
        candidate = CALL["offerCandidates"][0]
        for n in range(20):
            await alice.send_candidate("bob", "s", candidate, extra={"n": n})
        got = [await next_frame(bob) for _ in range(20)]
        assert [f.data["n"] for f in got] == list(range(20))  # type: ignore[attr-defined]
        assert await _publishes(redis_server) - before == 1


async def test_a_socketio_connect_with_a_session_arrives_after_its_seat_is_taken(
    nursery: trio.Nursery, redis_url: str
) -> None:
    """The old server seated ``auth.sessionId`` before the client heard ``connect``;
    over several nodes the seat waits for Redis, and CONNECT waits for the seat (a
    peer told "I'm connected" that joins at once must find it there)."""
    import trio_websocket

    settings = TEST_SETTINGS.replace(redis_url=redis_url)
    url_a, hub_a, stop_a = await start_node(nursery, settings)
    url_b, _, stop_b = await start_node(nursery, settings)
    assert hub_a.cluster is not None
    directory = hub_a.cluster.directory
    slow_join = directory.join

    async def join(*args: object) -> object:
        await trio.sleep(0.3)  # a Redis that answers late
        return await slow_join(*args)  # type: ignore[arg-type]

    directory.join = join  # type: ignore[method-assign,assignment]
    socketio_url = url_a.replace("/ws", "/socket.io/?EIO=4&transport=websocket")
    async with trio_websocket.open_websocket_url(socketio_url) as old:
        assert str(await old.get_message()).startswith("0{")  # Engine.IO open
        await old.send_message('40{"userId": "alice", "sessionId": "s"}')
        with trio.fail_after(5):
            connect_packet = await old.get_message()
        assert str(connect_packet).startswith("40{")
        # what a peer does on hearing "alice is connected": join, expecting her there
        async with connect(url_b, user_id="bob") as bob:
            assert (await bob.join("s")).participants == ["alice"]
        with trio.fail_after(5):
            assert str(await old.get_message()).startswith('42["session-joined"')
    stop_a.set()
    stop_b.set()


def test_cluster_ops_are_typed_and_travel_as_tagged_arrays() -> None:
    """Nodes speak typed ops; on the wire each is an array that starts with its tag."""
    import msgspec

    from signaling.server.cluster import Joined, Left, Op, Relay

    ops: list[Op] = [
        Relay("c_1", b"\x81\xa4type\xa5offer"),
        Joined("s", "alice", "n1", "c_2"),
        Joined("s", "alice", "n1", "c_3", "n2", "c_2"),
        Left("s", "bob", "n2", "c_4"),
    ]
    wire = msgspec.msgpack.encode(ops)
    assert msgspec.msgpack.decode(wire) == [
        ["r", "c_1", b"\x81\xa4type\xa5offer"],
        ["j", "s", "alice", "n1", "c_2", "", ""],
        ["j", "s", "alice", "n1", "c_3", "n2", "c_2"],
        ["l", "s", "bob", "n2", "c_4"],
    ]
    assert msgspec.msgpack.decode(wire, type=list[Op]) == ops
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode([["x", 1]]), type=list[Op])
