"""Caps on connections per node, per IP and per user, and on sessions per connection."""

from __future__ import annotations

import json
from ipaddress import ip_network

import httpx
import pytest
import trio
import trio.testing
import trio_websocket

from signaling.client import connect
from signaling.errors import Forbidden
from signaling.server.handshake import cap_key

from .conftest import TEST_SETTINGS, Server
from .test_http import _upgrade


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(max_connections=2)])
async def test_node_cap_refuses_upgrades_with_503(server: Server) -> None:
    async with connect(server.url, user_id="a"), connect(server.url, user_id="b"):
        status, _, body = await _upgrade(server, {})
        assert status == 503
        assert httpx.Response(200, content=body).json()["error"] == "server-full"


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(max_connections_per_ip=2)])
async def test_ip_cap_refuses_upgrades_with_429(server: Server) -> None:
    async with connect(server.url, user_id="a"), connect(server.url, user_id="b"):
        status, _, body = await _upgrade(server, {})
        assert status == 429
        assert httpx.Response(200, content=body).json()["error"] == "too-many-connections"
        assert dict(server.hub.by_ip) == {"127.0.0.1": 2}


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(max_connections_per_user=2)])
async def test_user_cap_closes_4409(server: Server) -> None:
    async with connect(server.url, user_id="alice"), connect(server.url, user_id="alice"):
        async with trio_websocket.open_websocket_url(server.url) as ws:
            await ws.send_message(json.dumps({"type": "auth", "userId": "alice", "id": "a"}))
            error = json.loads(await ws.get_message())
            assert (error["code"], error["replyTo"]) == ("forbidden", "a")
            assert "2 connections" in error["message"]
            with pytest.raises(trio_websocket.ConnectionClosed) as caught:
                await ws.get_message()
            assert caught.value.reason is not None
            assert caught.value.reason.code == 4409
        async with connect(server.url, user_id="bob"):
            assert dict(server.hub.by_user) == {"alice": 2, "bob": 1}


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(max_sessions_per_connection=3)])
async def test_sessions_per_connection_cap(server: Server) -> None:
    async with connect(server.url, user_id="alice") as alice:
        for n in range(3):
            await alice.join(f"s{n}")
        await alice.join("s1")  # re-joining one it sits in is fine
        with pytest.raises(Forbidden, match="3 sessions"):
            await alice.join("s3")
        await alice.leave("s0")
        await alice.join("s3")


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(rate_limit=10.0)])
async def test_counts_drop_when_connections_end(server: Server) -> None:
    hub = server.hub
    async with connect(server.url, user_id="alice") as alice:
        await alice.join("s")
    # the server may finish its side a moment after the client: wait for it
    with trio.fail_after(5):
        while hub.connections:
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
    assert (dict(hub.by_ip), dict(hub.by_user), len(hub.limiter)) == ({}, {}, 0)


def test_client_ip_from_trusted_proxies_only() -> None:
    from ipaddress import ip_network

    from signaling.server.handshake import client_ip

    proxies = (ip_network("10.0.0.0/8"), ip_network("127.0.0.1/32"))
    assert client_ip("127.0.0.1", ["203.0.113.7"], proxies) == "203.0.113.7"
    # the right-most untrusted hop is the client; what it claims further left is not believed
    assert client_ip("127.0.0.1", ["1.2.3.4, 203.0.113.7, 10.1.2.3"], proxies) == "203.0.113.7"
    assert client_ip("198.51.100.1", ["203.0.113.7"], proxies) == "198.51.100.1"
    assert client_ip("127.0.0.1", ["203.0.113.7"], ()) == "127.0.0.1"
    assert client_ip("127.0.0.1", ["not-an-ip"], proxies) == "127.0.0.1"
    assert client_ip("127.0.0.1", [], proxies) == "127.0.0.1"


@pytest.mark.parametrize(
    "settings",
    [TEST_SETTINGS.replace(max_connections_per_ip=1, trusted_proxies=(ip_network("127.0.0.1"),))],
)
async def test_per_ip_cap_uses_x_forwarded_for_behind_a_trusted_proxy(server: Server) -> None:
    first = await trio.open_tcp_stream("127.0.0.1", server.port)
    request = (
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "X-Forwarded-For: 203.0.113.7\r\n\r\n"
    )
    await first.send_all(request.encode())
    assert b" 101 " in await first.receive_some(4096)
    assert dict(server.hub.by_ip) == {"203.0.113.7": 1}
    status, _, _ = await _upgrade(server, {"X-Forwarded-For": "203.0.113.7"})
    assert status == 429
    status, _, _ = await _upgrade(server, {"X-Forwarded-For": "198.51.100.20"})
    assert status == 101
    await first.aclose()


def test_the_per_ip_cap_counts_an_ipv6_host_by_its_slash_64() -> None:
    assert cap_key("2001:db8:1:2::10") == cap_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert cap_key("2001:db8:1:3::10") == "2001:db8:1:3::/64"
    assert cap_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert cap_key("203.0.113.7") == "203.0.113.7"


@pytest.mark.parametrize(
    "settings",
    [TEST_SETTINGS.replace(max_connections_per_ip=2, trusted_proxies=(ip_network("127.0.0.1"),))],
)
async def test_ipv6_addresses_of_one_slash_64_share_the_cap(server: Server) -> None:
    streams = []
    for host in ("2001:db8::1", "2001:db8::2"):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        request = (
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Forwarded-For: {host}\r\n\r\n"
        )
        await stream.send_all(request.encode())
        assert b" 101 " in await stream.receive_some(4096)
        streams.append(stream)
    assert dict(server.hub.by_ip) == {"2001:db8::/64": 2}
    status, _, _ = await _upgrade(server, {"X-Forwarded-For": "2001:db8::ffff:3"})
    assert status == 429
    status, _, _ = await _upgrade(server, {"X-Forwarded-For": "2001:db8:0:1::3"})
    assert status == 101
    for stream in streams:
        await stream.aclose()


@pytest.mark.parametrize(
    "settings",
    [TEST_SETTINGS.replace(max_connections_per_ip=1, trusted_proxies=(ip_network("127.0.0.1"),))],
)
async def test_polling_counts_the_client_ip_by_the_same_rule(server: Server) -> None:
    """Behind a trusted proxy, Engine.IO long-polling counts X-Forwarded-For, as /ws does."""
    url = f"{server.http}/socket.io/?EIO=4&transport=polling"
    async with httpx.AsyncClient() as http:
        first = await http.get(url, headers={"X-Forwarded-For": "203.0.113.7"})
        assert first.status_code == 200
        assert dict(server.hub.by_ip) == {"203.0.113.7": 1}
        again = await http.get(url, headers={"X-Forwarded-For": "203.0.113.7"})
        assert again.status_code == 429
        other = await http.get(url, headers={"X-Forwarded-For": "198.51.100.20"})
        assert other.status_code == 200


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(allowed_origins=("https://app.example.com",))]
)
async def test_every_request_of_an_engine_io_session_checks_the_origin(server: Server) -> None:
    good = {"Origin": "https://app.example.com"}
    bad = {"Origin": "https://evil.example.com"}
    url = f"{server.http}/socket.io/?EIO=4&transport=polling"
    async with httpx.AsyncClient() as http:
        opened = await http.get(url, headers=good)
        sid = json.loads(opened.text[1:])["sid"]
        post = await http.post(f"{url}&sid={sid}", content="40{}", headers=bad)
        assert post.status_code == 403
        poll = await http.get(f"{url}&sid={sid}", headers=bad)
        assert poll.status_code == 403
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(
        f"GET /socket.io/?EIO=4&transport=websocket&sid={sid} HTTP/1.1\r\nHost: x\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://evil.example.com\r\n\r\n".encode()
    )
    assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 403 ")
    await stream.aclose()
