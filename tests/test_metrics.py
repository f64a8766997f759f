"""GET /metrics: Prometheus text with what the node did."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from signaling.client import connect
from signaling.errors import NotInSession
from signaling.frames import frame_tags
from signaling.server.stats import LATENCY_BUCKETS, Stats

from .conftest import TEST_SETTINGS, Server, chromium_call

CALL = chromium_call()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(server: Server, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http) as http:
        return await http.get("/metrics", headers=headers)


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(rate_limit=1.0, rate_burst=8, flood_strikes=100)]
)
async def test_metrics_count_what_happened(server: Server) -> None:
    async with (
        connect(server.url, user_id="alice") as alice,
        connect(server.url, user_id="bob", encoding="msgpack") as bob,
    ):
        await alice.join("s")
        await bob.join("s")
        await alice.send_offer("bob", "s", CALL["offer"])
        await bob.send_answer("alice", "s", CALL["answer"])
        await alice.send_candidate("bob", "s", CALL["offerCandidates"][0])
        await alice.report_state("s", "connected")
        with pytest.raises(NotInSession):
            await alice.leave("elsewhere")
        with trio.fail_after(5):
            for _ in range(2):
                await bob.receive()
        # alice has spent 5 of 8 tokens: 5 more frames, 2 of them refused
        for _ in range(5):
            await alice.report_state("s", "connected")
        with trio.fail_after(5):
            refused = 0
            while refused < 2:
                frame = await alice.receive()
                refused += getattr(frame, "code", None) == "rate-limited"
        response = await scrape(server)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
        assert found[("signaling_connections", ())] == 2
        assert found[("signaling_sessions", ())] == 1
        assert found[("signaling_participants", ())] == 2
        assert found[("signaling_frames_in_total", (("type", "auth"),))] == 2
        assert found[("signaling_frames_in_total", (("type", "offer"),))] == 1
        assert found[("signaling_frames_in_total", (("type", "join-session"),))] == 2
        assert found[("signaling_frames_out_total", (("type", "welcome"),))] == 2
        # every frame type is there from the start, at 0 until one is counted
        assert found[("signaling_frames_out_total", (("type", "user-left"),))] == 0
        assert found[("signaling_relayed_total", ())] == 3
        assert found[("signaling_errors_total", (("code", "not-in-session"),))] == 1
        assert found[("signaling_errors_total", (("code", "rate-limited"),))] == 2
        assert found[("signaling_rate_limited_total", ())] == 2
        assert found[("signaling_connection_states_total", (("state", "connected"),))] == 4
        assert found[("signaling_relay_latency_seconds_count", ())] >= 3
        assert found[("signaling_outbox_max_frames", ())] >= 0
        assert found[("process_resident_memory_bytes", ())] > 0
    async with trio_websocket.open_websocket_url(server.url) as ws:
        await ws.send_message(json.dumps({"type": "join-session", "sessionId": "s"}))
        assert json.loads(await ws.get_message())["code"] == "unauthorized"
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
    async with httpx.AsyncClient() as http:
        upgrade = await http.get(
            f"{server.http}/ws",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "8",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert upgrade.status_code == 426
    found = samples((await scrape(server)).text)
    assert found[("signaling_closes_total", (("code", "1000"),))] >= 2
    assert found[("signaling_closes_total", (("code", "4401"),))] == 1
    assert found[("signaling_upgrades_refused_total", (("reason", "bad-upgrade"),))] == 1


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(metrics_token="s3cret")])
async def test_metrics_token_is_required_when_configured(server: Server) -> None:
    assert (await scrape(server)).status_code == 401
    wrong = await scrape(server, {"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized"
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert (await scrape(server, {"Authorization": "Bearer s3cret"})).status_code == 200


def test_frames_written_at_once_count_in_the_first_latency_bucket() -> None:
    stats = Stats(frame_tags())
    stats.sent_at_once += 3
    stats.observe_latency(0.02, 2)
    buckets, seconds = stats.latency_histogram()
    assert buckets[0] == 3
    assert buckets[LATENCY_BUCKETS.index(0.025)] == 2
    assert sum(buckets) == 5
    assert seconds == pytest.approx(0.04)
    assert stats.frames_in == dict.fromkeys(frame_tags()[0], 0)
