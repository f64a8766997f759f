"""ICE servers: static STUN, Cloudflare TURN against a local stand-in, REST credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from quart import request
from quart_trio import QuartTrio

from signaling.client import connect
from signaling.server.config import ConfigError, load_settings
from signaling.server.ice import CLOUDFLARE_MAX_TTL, CloudflareTurn, rest_credentials

from .conftest import TEST_SETTINGS, Server, serve_app
from .test_cli import run_cli

KEY_ID = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
TOKEN = "cf-api-token-0123456789"
STUN = [{"urls": "stun:stun.l.google.com:19302"}, {"urls": "stun:stun1.l.google.com:19302"}]
"""The old server's shape: one entry per STUN URL, ``urls`` a string."""

# Cloudflare's documented answer to generate-ice-servers (201 Created).
CLOUDFLARE_SERVERS: list[dict[str, Any]] = [
    {"urls": ["stun:stun.cloudflare.com:3478", "stun:stun.cloudflare.com:53"]},
    {
        "urls": [
            "turn:turn.cloudflare.com:3478?transport=udp",
            "turn:turn.cloudflare.com:53?transport=udp",
            "turn:turn.cloudflare.com:3478?transport=tcp",
            "turn:turn.cloudflare.com:80?transport=tcp",
            "turns:turn.cloudflare.com:5349?transport=tcp",
            "turns:turn.cloudflare.com:443?transport=tcp",
        ],
        "username": (
            "bc91b63e2b5d759f8eb9f3b58062439e0a0e15893d76317d833265ad08d663"
            "1099ce7c7087caabb31ad3e1c386424e3e"
        ),
        "credential": (
            "ebd71f1d3edbc2b0edae3cd5a6d82284aeb5c3b8fdaa9b8e3bf9cec683e0d4"
            "5fe9f5b44e5145db3300f06c250a15b4a0"
        ),
    },
]
WITHOUT_PORT_53 = [
    {"urls": "stun:stun.cloudflare.com:3478"},
    {
        "urls": [
            "turn:turn.cloudflare.com:3478?transport=udp",
            "turn:turn.cloudflare.com:3478?transport=tcp",
            "turn:turn.cloudflare.com:80?transport=tcp",
            "turns:turn.cloudflare.com:5349?transport=tcp",
            "turns:turn.cloudflare.com:443?transport=tcp",
        ],
        "username": CLOUDFLARE_SERVERS[1]["username"],
        "credential": CLOUDFLARE_SERVERS[1]["credential"],
    },
]


@dataclass
class FakeCloudflare:
    """A local server answering as Cloudflare's Realtime TURN API documents."""

    url: str = ""
    mode: str = "ok"
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def cloudflare(nursery: trio.Nursery) -> AsyncIterator[FakeCloudflare]:
    fake = FakeCloudflare()
    app = QuartTrio("fake-cloudflare")

    @app.post("/v1/turn/keys/<key_id>/credentials/generate-ice-servers")
    async def generate(key_id: str) -> Any:
        body = await request.get_json()
        fake.requests.append(
            {"key_id": key_id, "authorization": request.headers.get("Authorization"), "body": body}
        )
        if fake.delay:
            await trio.sleep(fake.delay)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}" or fake.mode == "401":
            return {
                "success": False,
                "errors": [{"code": 10000, "message": "Authentication error"}],
            }, 401
        if fake.mode == "500":
            return {"success": False, "errors": [{"code": 7000, "message": "Internal error"}]}, 500
        if fake.mode == "old":
            return {"iceServers": CLOUDFLARE_SERVERS[1]}, 201
        return {"iceServers": CLOUDFLARE_SERVERS}, 201

    fake.url, stop = await serve_app(nursery, app)
    yield fake
    stop.set()


@pytest.fixture
def settings(cloudflare: FakeCloudflare) -> Any:
    return TEST_SETTINGS.replace(
        turn_provider="cloudflare",
        cloudflare_turn_key_id=KEY_ID,
        cloudflare_api_token=TOKEN,
        cloudflare_api_base_url=cloudflare.url,
        turn_ttl=10**6,
        turn_request_timeout=0.5,
    )


async def credentials(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.post("/turn/credentials")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def test_cloudflare_credentials_follow_our_stun_servers(
    server: Server, cloudflare: FakeCloudflare
) -> None:
    body = await credentials(server)
    assert body["iceServers"] == [*STUN, *WITHOUT_PORT_53]
    [call] = cloudflare.requests
    assert call == {
        "key_id": KEY_ID,
        "authorization": f"Bearer {TOKEN}",
        "body": {"ttl": CLOUDFLARE_MAX_TTL},  # 10**6 asked, clamped to 48 hours
    }
    async with connect(server.url, user_id="alice") as alice:
        assert alice.welcome is not None
        welcome = [json.loads(json.dumps(s, default=str)) for s in _builtins(alice.welcome)]
        assert welcome == body["iceServers"]
    assert len(cloudflare.requests) == 1


async def test_the_old_servers_response_shape(server: Server, cloudflare: FakeCloudflare) -> None:
    """The old README: STUN entries with ``urls`` a string, then TURN; ``timestamp`` in ms."""
    body = await credentials(server)
    assert set(body) == {"iceServers", "timestamp"}
    assert isinstance(body["timestamp"], int)
    stun = [s for s in body["iceServers"] if "username" not in s]
    turn = [s for s in body["iceServers"] if "username" in s]
    assert body["iceServers"] == [*stun, *turn]
    assert stun[0] == {"urls": "stun:stun.l.google.com:19302"}
    assert all(isinstance(s["urls"], str) and s["urls"].startswith("stun:") for s in stun)
    [entry] = turn
    assert set(entry) == {"urls", "username", "credential"}
    assert isinstance(entry["urls"], list)
    assert all(url.startswith(("turn:", "turns:")) for url in entry["urls"])


def _builtins(welcome: Any) -> list[Any]:
    import msgspec

    result: list[Any] = msgspec.to_builtins(welcome.ice_servers)
    return result


async def test_a_burst_makes_one_upstream_call(server: Server, cloudflare: FakeCloudflare) -> None:
    cloudflare.delay = 0.2  # all requests arrive while the first fetch is in flight
    answers: list[dict[str, Any]] = []

    async def one() -> None:
        answers.append(await credentials(server))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert len(answers) == 20
    assert all(a["iceServers"] == [*STUN, *WITHOUT_PORT_53] for a in answers)
    assert len(cloudflare.requests) == 1


@pytest.mark.parametrize(("mode", "reason"), [("401", "401"), ("500", "500"), ("slow", "timeout")])
async def test_upstream_failure_answers_stun_only_with_one_warning(
    server: Server,
    cloudflare: FakeCloudflare,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    reason: str,
) -> None:
    cloudflare.mode = mode
    if mode == "slow":
        cloudflare.delay = 2.0
    with caplog.at_level(logging.WARNING, logger="signaling.ice"):
        for _ in range(5):
            assert (await credentials(server))["iceServers"] == STUN
        async with connect(server.url, user_id="alice") as alice:
            assert alice.welcome is not None
            assert len(alice.welcome.ice_servers) == len(STUN)
    warnings = [r.getMessage() for r in caplog.records if r.name == "signaling.ice"]
    assert len(warnings) == 1
    assert (reason if reason != "timeout" else "no answer") in warnings[0]
    assert len(cloudflare.requests) == 1  # the failure is remembered briefly
    async with httpx.AsyncClient(base_url=server.http) as http:
        metrics = (await http.get("/metrics")).text
    found = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert found[("signaling_turn_upstream_failures_total", (("reason", reason),))] == 1
    assert found[("signaling_turn_upstream_requests_total", ())] == 1


async def test_older_single_object_shape_is_accepted(
    server: Server, cloudflare: FakeCloudflare
) -> None:
    cloudflare.mode = "old"
    assert (await credentials(server))["iceServers"] == [*STUN, WITHOUT_PORT_53[1]]


async def test_port_53_can_be_kept(cloudflare: FakeCloudflare) -> None:
    provider = CloudflareTurn(
        (),
        key_id=KEY_ID,
        api_token=TOKEN,
        ttl=3600,
        base_url=cloudflare.url,
        timeout=1,
        refresh_margin=60,
        allow_port_53=True,
    )
    import msgspec

    # Cloudflare's STUN entry comes out one URL an entry, like ours; TURN as it came
    assert msgspec.to_builtins(await provider.ice_servers("alice")) == [
        {"urls": "stun:stun.cloudflare.com:3478"},
        {"urls": "stun:stun.cloudflare.com:53"},
        CLOUDFLARE_SERVERS[1],
    ]
    await provider.aclose()


async def test_credentials_are_refreshed_shortly_before_they_expire(
    cloudflare: FakeCloudflare,
) -> None:
    now = [1000.0]
    provider = CloudflareTurn(
        (),
        key_id=KEY_ID,
        api_token=TOKEN,
        ttl=3600,
        base_url=cloudflare.url,
        timeout=1,
        refresh_margin=300,
        clock=lambda: now[0],
    )
    await provider.ice_servers("alice")
    now[0] += 3600 - 300 - 1
    await provider.ice_servers("bob")
    assert len(cloudflare.requests) == 1
    now[0] += 1
    await provider.ice_servers("carol")
    assert len(cloudflare.requests) == 2
    assert [r["body"] for r in cloudflare.requests] == [{"ttl": 3600}, {"ttl": 3600}]
    await provider.aclose()


def test_rest_credentials_follow_the_turn_rest_draft() -> None:
    username, credential = rest_credentials("s3cret", "alice", 600, now=1_700_000_000.7)
    assert username == "1700000600:alice"
    expected = hmac.new(b"s3cret", b"1700000600:alice", hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected


@pytest.mark.parametrize(
    ("provider", "missing"),
    [
        ("cloudflare", "CLOUDFLARE_TURN_KEY_ID and CLOUDFLARE_API_TOKEN"),
        ("rest", "TURN_REST_SECRET and TURN_REST_URLS"),
    ],
)
def test_provider_without_its_settings_stops_start_up(provider: str, missing: str) -> None:
    with pytest.raises(ConfigError, match=f"TURN_PROVIDER={provider} needs {missing}"):
        load_settings(environ={"TURN_PROVIDER": provider}, env_file=None)
    result = run_cli("serve", "--turn-provider", provider)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert missing in result.stderr


def test_only_the_key_is_needed_to_name_the_missing_token() -> None:
    with pytest.raises(ConfigError, match=r"needs CLOUDFLARE_API_TOKEN$"):
        load_settings(
            environ={"TURN_PROVIDER": "cloudflare", "CLOUDFLARE_TURN_KEY_ID": KEY_ID},
            env_file=None,
        )
