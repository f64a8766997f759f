"""Rate limits per user: token buckets in the core, warnings and 4429 over sockets."""

from __future__ import annotations

import json
import time
from typing import Literal

import pytest
import trio
import trio_websocket
from trio.testing import MockClock

from signaling.core import RateLimiter, TokenBucket
from signaling.core.ratelimit import FLOOD_GRACE
from signaling.errors import RateLimited
from signaling.frames import Error, IceCandidate, JoinSession, RelayedIceCandidate, UserJoined

from .conftest import TEST_SETTINGS, Server, chromium_call

CALL = chromium_call()
LIMITED = TEST_SETTINGS.replace(rate_limit=10.0, rate_burst=50, flood_strikes=20)


@pytest.fixture
def server(memory_server: Server) -> Server:
    """The rules run in memory (a `MemoryListener`); the slow ones on the autojump clock."""
    return memory_server


def test_bucket_allows_the_burst_then_says_when_to_retry() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.05) == pytest.approx(0.05)
    assert bucket.take(0.1) == 0.0
    # refills up to the burst, never beyond
    assert [bucket.take(100.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) > 0


def test_limiter_shares_a_bucket_per_user_and_forgets_users_who_left() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    first = limiter.acquire("alice", 0.0)
    second = limiter.acquire("alice", 0.0)
    assert first is second is not None
    assert limiter.acquire("bob", 0.0) is not first
    limiter.release("alice")
    assert len(limiter) == 2
    limiter.release("alice")
    limiter.release("bob")
    assert len(limiter) == 0
    assert RateLimiter(rate=0, burst=5).acquire("x", 0.0) is None


@pytest.mark.parametrize("settings", [LIMITED])
async def test_a_call_setup_burst_passes(server: Server) -> None:
    async with (
        server.connect(user_id="alice") as alice,
        server.connect(user_id="bob") as bob,
    ):
        await alice.join("s")
        await bob.join("s")
        await alice.send_offer("bob", "s", CALL["offer"])
        for n in range(30):  # a fast trickle-ICE burst
            await alice.send_candidate("bob", "s", {**CALL["offerCandidates"][0], "sdpMid": str(n)})
        await alice.report_state("s", "connecting")
        with trio.fail_after(5):
            frames = [await bob.receive() for _ in range(31)]
            assert not [f for f in frames if isinstance(f, Error)]
            await alice.join("s")  # round trip: no rate-limited error is waiting for alice
            assert (await alice.receive()).user_id == "bob"  # type: ignore[union-attr]


@pytest.mark.parametrize("settings", [LIMITED.replace(rate_limit=1.0)])
async def test_over_the_limit_frames_are_refused_with_retry_after(server: Server) -> None:
    async with (
        server.connect(user_id="alice") as alice,
        server.connect(user_id="alice") as alice_again,
        server.connect(user_id="bob") as bob,
    ):
        await alice.join("s")  # token 1 of alice's 50
        await bob.join("s")
        # both connections of alice draw on one bucket
        for _ in range(20):
            await alice_again.report_state("s", "connecting")
        candidate = CALL["offerCandidates"][0]
        for n in range(35):
            await alice.send_candidate("bob", "s", {**candidate, "sdpMid": str(n)})
        with trio.fail_after(5):
            relayed = [await bob.receive() for _ in range(29)]
            candidates = [f for f in relayed if isinstance(f, RelayedIceCandidate)]
            assert len(candidates) == len(relayed)
            assert (await alice.receive()).user_id == "bob"  # type: ignore[union-attr]
            errors = [await alice.receive() for _ in range(6)]
            with pytest.raises(RateLimited) as caught:
                await alice_again.request(JoinSession(session_id="t"))
        assert all(isinstance(e, Error) and e.code == "rate-limited" for e in errors)
        assert all(0 < e.retry_after_ms <= 1000 for e in errors)  # type: ignore[union-attr,operator]
        assert 0 < caught.value.retry_after_ms <= 1000  # type: ignore[operator]
        # the refused candidates were not relayed
        assert [f.data["candidate"]["sdpMid"] for f in candidates] == [str(n) for n in range(29)]


@pytest.mark.parametrize("settings", [LIMITED])
async def test_persistent_flooding_closes_4429(server: Server, autojump_clock: MockClock) -> None:
    """Still over the limit FLOOD_GRACE after the first warning: closed, each frame answered."""
    sent = [0]
    closed = trio.Event()
    async with server.websocket(["signaling.v1.json"]) as ws:
        await ws.send_message(json.dumps({"type": "auth", "userId": "flood"}))
        await ws.get_message()

        async def flood() -> None:
            for n in range(20_000):  # bounded: the close comes after ~1 s, at ~200 frames/s
                frame = json.dumps({"type": "leave-session", "sessionId": "x", "id": str(n)})
                try:
                    await ws.send_message(frame)
                except trio_websocket.ConnectionClosed:
                    return
                sent[0] += 1
                await trio.sleep(0.005)
                if closed.is_set():
                    return

        warnings: list[float] = []
        replies: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            with trio.fail_after(10):
                try:
                    while True:
                        frame = json.loads(await ws.get_message())
                        replies.append(int(frame["replyTo"]))
                        if frame.get("code") == "rate-limited":
                            warnings.append(trio.current_time())
                except trio_websocket.ConnectionClosed as exc:
                    reason = exc.reason
                    closed_at = trio.current_time()
                    closed.set()
    assert reason is not None
    assert reason.code == 4429
    assert closed_at - warnings[0] >= FLOOD_GRACE - 0.05
    assert len(warnings) >= LIMITED.flood_strikes
    # every frame the server read got its answer, in order (not-in-session when the
    # bucket allowed it, else rate-limited), the one that closed the connection
    # included: nothing vanished
    assert replies == list(range(len(replies)))
    assert len(replies) > len(warnings) > len(replies) - LIMITED.rate_burst - 30


@pytest.mark.parametrize(
    "settings", [LIMITED.replace(rate_limit=10.0, rate_burst=10, flood_strikes=20)]
)
@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_burst_over_the_limit_is_each_delivered_or_refused(
    server: Server, encoding: Literal["json", "msgpack"]
) -> None:
    """The old server's 10/s, burst 10: 30 candidates at once, each relayed or answered."""
    async with (
        server.connect(user_id="alice", encoding=encoding) as alice,
        server.connect(user_id="bob") as bob,
    ):
        await alice.join("s")
        await bob.join("s")
        with trio.fail_after(5):
            assert isinstance(await alice.receive(), UserJoined)
        candidate = CALL["offerCandidates"][0]
        for n in range(30):
            await alice.send(
                IceCandidate(to="bob", session_id="s", data={"candidate": candidate}, id=f"c{n}")
            )
        await bob.join("s")  # a round trip after the burst
        with trio.fail_after(5):
            answered = [await alice.receive() for _ in range(30 - 9)]
            relayed: list[str] = []
            while len(relayed) < 9:
                frame = await bob.receive()
                if isinstance(frame, RelayedIceCandidate):
                    assert isinstance(frame.id, str)
                    relayed.append(frame.id)
    refused = [
        f.reply_to
        for f in answered
        if isinstance(f, Error) and f.code == "rate-limited" and isinstance(f.reply_to, str)
    ]
    assert len(refused) == len(answered)
    assert sorted([*relayed, *refused], key=lambda i: int(i[1:])) == [f"c{n}" for n in range(30)]


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(rate_limit=10.0, rate_burst=300, flood_strikes=10**6)]
)
async def test_a_flooding_user_does_not_slow_others_down(server: Server) -> None:
    latencies: list[float] = []
    async with (
        server.connect(user_id="alice") as alice,
        server.connect(user_id="bob") as bob,
        server.connect(user_id="mallory") as mallory,
        trio.open_nursery() as nursery,
    ):
        await alice.join("s")
        await bob.join("s")
        await mallory.join("m")
        stop = trio.Event()
        flooding = trio.Event()
        refused = [0]

        async def flood() -> None:
            frame = json.dumps({"type": "leave-session", "sessionId": "nowhere"})
            for _ in range(200_000):
                if stop.is_set():
                    return
                await mallory.send_raw(frame)

        async def drain() -> None:
            async for frame in mallory:
                if isinstance(frame, Error) and frame.code == "rate-limited":
                    refused[0] += 1
                    if refused[0] >= 500:
                        flooding.set()

        nursery.start_soon(flood)
        nursery.start_soon(drain)
        candidate = CALL["offerCandidates"][0]
        with trio.fail_after(30):
            await flooding.wait()
            refused_before = refused[0]
            for _ in range(150):  # 150 frames each way: within alice's and bob's own bursts
                sent = time.perf_counter()
                await alice.send_candidate("bob", "s", candidate)
                frame = await bob.receive()
                assert isinstance(frame, RelayedIceCandidate)
                await bob.send_candidate("alice", "s", candidate)
                frame = await alice.receive()
                while not isinstance(frame, RelayedIceCandidate):
                    frame = await alice.receive()
                latencies.append(time.perf_counter() - sent)
        stop.set()
        assert refused[0] - refused_before > 300, "the flood went on during the measurement"
        nursery.cancel_scope.cancel()
    latencies.sort()
    p99 = latencies[int(0.99 * len(latencies))]
    assert p99 < 0.1, f"p99 {p99 * 1000:.1f} ms while another user floods"


def test_the_flood_rule_sans_io() -> None:
    """protocol/SPEC.md §5 rule 9: strikes in one run of refusals lasting FLOOD_GRACE."""
    from signaling.core import FloodWatch

    watch = FloodWatch(limit=3)
    # a burst: many refusals within the grace is not a flood
    assert [watch.refused(t / 100) for t in range(10)] == [False] * 10
    # still refused a grace later, with enough strikes: flooding
    assert watch.refused(FLOOD_GRACE) is True
    # calm for longer than the grace: a new run starts from nothing
    calm = FloodWatch(limit=3)
    calm.refused(0.0)
    calm.refused(0.5)
    assert calm.refused(0.5 + FLOOD_GRACE + 0.01) is False
    assert calm.strikes == 1
