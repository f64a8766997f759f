"""HTTP routes on the shared port, and refused WebSocket upgrades."""

from __future__ import annotations

import datetime
import time

import httpx
import pytest
import trio

from signaling.server import Settings
from signaling.server.config import load_settings

from .conftest import TEST_SETTINGS, Server


async def test_health(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    stamp = datetime.datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert stamp.tzinfo is not None
    assert stamp.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - stamp).total_seconds()) < 60


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(stun_urls=("stun:stun.example.org:3478",))]
)
async def test_turn_credentials_returns_the_configured_stun_list(server: Server) -> None:
    before = int(time.time() * 1000)
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.post("/turn/credentials")
    assert response.status_code == 200
    body = response.json()
    assert body["iceServers"] == [{"urls": "stun:stun.example.org:3478"}]
    assert before <= body["timestamp"] <= int(time.time() * 1000)


async def test_default_stun_servers_are_googles(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        body = (await http.post("/turn/credentials")).json()
    assert body["iceServers"] == [
        {"urls": "stun:stun.l.google.com:19302"},
        {"urls": "stun:stun1.l.google.com:19302"},
    ]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nope", 404), ("GET", "/turn/credentials", 405), ("POST", "/health", 405)],
)
async def test_http_errors_are_json(server: Server, method: str, path: str, status: int) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]
    assert body["message"]


async def test_keep_alive_serves_several_requests_on_one_connection(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        for _ in range(3):
            assert (await http.get("/health")).status_code == 200


async def _upgrade(server: Server, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """Send a raw upgrade request; return status, headers and body."""
    base = {
        "Host": f"127.0.0.1:{server.port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    base.update(headers)
    request = "GET /ws HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in base.items() if v)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all((request + "\r\n").encode())
        data = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(4096)
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            status = int(lines[0].split()[1])
            parsed = {
                k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
            }
            length = int(parsed.get("content-length", "0"))
            while len(body) < length:
                body += await stream.receive_some(4096)
    return status, parsed, body


async def test_upgrade_answers_101_with_the_accept_key(server: Server) -> None:
    status, headers, _ = await _upgrade(server, {"Sec-WebSocket-Protocol": "signaling.v1.json"})
    assert status == 101
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert headers["sec-websocket-protocol"] == "signaling.v1.json"
    assert "sec-websocket-extensions" not in headers


async def test_permessage_deflate_is_never_negotiated(server: Server) -> None:
    status, headers, _ = await _upgrade(
        server, {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
    )
    assert status == 101
    assert "sec-websocket-extensions" not in headers


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({"Sec-WebSocket-Protocol": "chat, superchat"}, 400, "unsupported-subprotocol"),
        ({"Sec-WebSocket-Version": "8"}, 426, "bad-upgrade"),
        ({"Sec-WebSocket-Key": "short"}, 400, "bad-upgrade"),
        ({"Connection": "keep-alive"}, 400, "bad-upgrade"),
    ],
)
async def test_bad_upgrades_are_refused_with_json(
    server: Server, headers: dict[str, str], status: int, error: str
) -> None:
    got, response_headers, body = await _upgrade(server, headers)
    assert got == status
    assert response_headers["content-type"] == "application/json"
    assert httpx.Response(200, content=body).json()["error"] == error
    if status == 426:
        assert response_headers["sec-websocket-version"] == "13"


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(allowed_origins=("https://app.example.com",))]
)
async def test_origin_not_allowed_is_refused_before_auth(server: Server) -> None:
    status, _, body = await _upgrade(server, {"Origin": "https://evil.example.com"})
    assert status == 403
    assert httpx.Response(200, content=body).json()["error"] == "origin-not-allowed"
    # exact match only: a prefix or suffix of an allowed origin is still refused
    status, _, _ = await _upgrade(server, {"Origin": "https://app.example.com.evil.net"})
    assert status == 403
    status, _, _ = await _upgrade(server, {"Origin": "https://app.example.com"})
    assert status == 101
    status, _, _ = await _upgrade(server, {"Origin": ""})
    assert status == 101


def _origins(text: str) -> tuple[str, ...]:
    return load_settings(environ={"ALLOWED_ORIGINS": text}, env_file=None).allowed_origins


@pytest.mark.parametrize(
    "settings",
    [
        TEST_SETTINGS.replace(
            allowed_origins=_origins("HTTPS://App.Example.com:443,https://*.example.org")
        )
    ],
)
async def test_origins_match_as_rfc_6454_compares_them(server: Server) -> None:
    for origin in (
        "https://app.example.com",
        "HTTPS://APP.EXAMPLE.COM",
        "https://app.example.com:443",
        "https://a.example.org",
        "https://a.b.example.org",
    ):
        status, _, _ = await _upgrade(server, {"Origin": origin})
        assert status == 101, origin
    for origin in (
        "http://app.example.com",  # another scheme
        "https://app.example.com:8443",  # another port
        "https://example.org",  # *. is for subdomains only
        "https://evil-example.org",
        "https://a.example.org.evil.net",
        "https://a.example.org:444",
    ):
        status, _, _ = await _upgrade(server, {"Origin": origin})
        assert status == 403, origin


async def test_a_half_sent_request_head_does_not_block_others(server: Server) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        # A complete request on another connection is still served meanwhile.
        async with httpx.AsyncClient(base_url=server.http) as http:
            assert (await http.get("/health")).status_code == 200


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(backlog=1234)])
async def test_listen_backlog_is_ours_not_hypercorns(server: Server) -> None:
    # ss shows a listening socket's accept-queue limit as Send-Q.
    result = await trio.run_process(["ss", "-ltnH", f"sport = :{server.port}"], capture_stdout=True)
    columns = result.stdout.decode().split()
    assert columns[0] == "LISTEN"
    assert int(columns[2]) == 1234


APP = "https://app.example.com"


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(allowed_origins=(APP,))])
async def test_cors_for_allowed_origins_only(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        allowed = await http.get("/health", headers={"Origin": APP})
        assert allowed.headers["access-control-allow-origin"] == APP
        assert "Origin" in allowed.headers["vary"]
        other = await http.get("/health", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers
        preflight = await http.options(
            "/turn/credentials",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "Authorization" in preflight.headers["access-control-allow-headers"]
        refused = await http.options(
            "/turn/credentials",
            headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 403
        assert refused.json()["error"] == "origin-not-allowed"
        assert "access-control-allow-origin" not in refused.headers


async def test_cors_allows_any_origin_when_none_is_configured(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.post("/turn/credentials", headers={"Origin": "http://localhost:5173"})
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(allowed_origins=(APP,), allow_no_origin=False)]
)
async def test_upgrade_without_origin_can_be_refused(server: Server) -> None:
    status, _, body = await _upgrade(server, {})
    assert status == 403
    assert "without Origin" in httpx.Response(200, content=body).json()["message"]
    status, _, _ = await _upgrade(server, {"Origin": APP})
    assert status == 101


async def test_ws_opened_as_a_page_says_what_it_is(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        plain = await http.get("/ws")
        page = await http.get("/ws", headers={"Accept": "text/html", "Host": "<b>x</b>"})
        named = await http.get("/ws", headers={"Accept": "text/html", "Host": "x.example"})
        icon = await http.get("/favicon.ico")
        missing = await http.get("/nope")
    assert plain.status_code == 426
    assert plain.headers["upgrade"] == "websocket"
    assert plain.json()["error"] == "upgrade-required"
    assert "new WebSocket(" in plain.json()["message"]
    assert page.status_code == 426
    assert page.headers["content-type"].startswith("text/html")
    assert "&#x27;signaling.v1.json&#x27;" in page.text  # escaped for HTML
    assert "<b>" not in page.text
    assert "ws://x.example/ws" in named.text
    assert icon.status_code == 204
    assert missing.status_code == 404
    assert "no such endpoint: '/nope'" in missing.json()["message"]
    assert "requested URL" not in missing.text  # not Werkzeug's text
