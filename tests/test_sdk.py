"""The Python SDK as its users meet it: types, exceptions with causes, timeouts, reconnect."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio_websocket
import trustme

import signaling.client
from signaling.client import (
    Client,
    ConnectionClosed,
    ConnectionFailed,
    ConnectTimeout,
    HandshakeRejected,
    Reconnected,
    RelayedAnswer,
    RelayedOffer,
    RequestTimeout,
    Unauthorized,
    UserJoined,
    connect,
)
from signaling.server import Settings

from .conftest import TEST_SETTINGS, Server, chromium_call, start_server
from .test_cli import clean_env, free_port, running, serve_command

ROOT = Path(__file__).resolve().parents[1]
CALL = chromium_call()

USER_PROGRAM = """\
import trio

from signaling.client import ConnectionFailed, RelayedOffer, connect


async def main() -> None:
    try:
        async with connect("ws://127.0.0.1:3001/ws", user_id="alice") as client:
            joined = await client.join("room")
            frame = await client.receive()
            if isinstance(frame, RelayedOffer):
                print(frame.from_, frame.data["sdp"], joined.participants)
    except ConnectionFailed as exc:
        print(exc.__cause__)


trio.run(main)
"""


def test_mypy_strict_users_get_our_types(tmp_path: Path) -> None:
    """Installed like a wheel (a site directory, not our source tree), the package
    is typed (``py.typed``): no 'missing library stubs' for ``mypy --strict``."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "signaling").symlink_to(ROOT / "signaling")
    (tmp_path / "app.py").write_text(USER_PROGRAM)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "app.py"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**clean_env(), "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_frames_and_errors_come_from_signaling_client() -> None:
    for name in (
        "Welcome",
        "SessionJoined",
        "UserJoined",
        "UserLeft",
        "RelayedOffer",
        "RelayedAnswer",
        "RelayedIceCandidate",
        "Error",
        "Offer",
        "JoinSession",
        "SessionFull",
        "Unauthorized",
        "SignalingError",
    ):
        assert name in signaling.client.__all__
        assert getattr(signaling.client, name) is not None


async def test_a_server_that_is_down_is_a_connection_failure_with_its_cause() -> None:
    port = free_port()  # nothing listens there
    with trio.fail_after(5), pytest.raises(ConnectionFailed) as caught:
        async with connect(f"ws://127.0.0.1:{port}/ws", user_id="a"):
            pass
    assert isinstance(caught.value, ConnectionError)
    assert f"cannot connect to 127.0.0.1:{port}" in str(caught.value)
    assert "refused" in str(caught.value).lower()
    assert isinstance(caught.value.__cause__, OSError)


async def test_a_wrong_path_is_a_rejected_handshake_with_the_servers_reason(
    server: Server,
) -> None:
    with pytest.raises(HandshakeRejected) as caught:
        async with connect(f"ws://127.0.0.1:{server.port}/nope", user_id="a"):
            pass
    assert caught.value.status_code == 404
    assert caught.value.error == "not-found"
    assert "use /ws" in str(caught.value)
    assert isinstance(caught.value.__cause__, trio_websocket.ConnectionRejected)


@pytest.fixture
def tls_settings(tmp_path: Path) -> Settings:
    cert = trustme.CA().issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return TEST_SETTINGS.replace(certfile=str(certfile), keyfile=str(keyfile))


async def test_tls_failures_say_so_at_once(nursery: trio.Nursery, tls_settings: Settings) -> None:
    server = await start_server(nursery, tls_settings)
    start = trio.current_time()
    # a certificate the system does not trust: the TLS error, not a 10 s timeout
    with pytest.raises(ConnectionFailed) as untrusted:
        async with connect(f"wss://127.0.0.1:{server.port}/ws", user_id="a"):
            pass
    assert "TLS handshake with 127.0.0.1" in str(untrusted.value)
    assert isinstance(untrusted.value.__cause__, ssl.SSLCertVerificationError)
    # ws:// to a TLS port
    with pytest.raises(ConnectionFailed) as plain:
        async with connect(f"ws://127.0.0.1:{server.port}/ws", user_id="a"):
            pass
    assert "is it a wss:// server?" in str(plain.value)
    assert trio.current_time() - start < 5


async def test_a_silent_server_is_a_connect_timeout() -> None:
    with socket.socket() as listener:  # accepts (the kernel does), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with trio.fail_after(5), pytest.raises(ConnectTimeout) as caught:
            async with connect(f"ws://127.0.0.1:{port}/ws", user_id="a", open_timeout=0.3):
                pass
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, ConnectionFailed)
    assert "within 0.3 s" in str(caught.value)


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(token_secret="s" * 32)])
async def test_a_refused_auth_raises_the_servers_error(server: Server) -> None:
    with pytest.raises(Unauthorized):
        async with connect(f"ws://127.0.0.1:{server.port}/ws", user_id="a", token="bad"):
            pass


async def _welcome_only_server(nursery: trio.Nursery) -> int:
    """A WebSocket server that welcomes and then answers nothing."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept(subprotocol="signaling.v1.json")
        await ws.get_message()
        await ws.send_message(
            '{"type": "welcome", "userId": "a", "connectionId": "c_1", "iceServers": []}'
        )
        # answer nothing more, until the client closes
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            while True:
                await ws.get_message()

    server: trio_websocket.WebSocketServer = await nursery.start(
        trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
    )
    return server.port


async def test_requests_time_out_and_the_connection_stays(nursery: trio.Nursery) -> None:
    port = await _welcome_only_server(nursery)
    async with connect(f"ws://127.0.0.1:{port}/ws", user_id="a", request_timeout=0.2) as client:
        with pytest.raises(RequestTimeout, match=r"within 0\.2 s"):
            await client.join("s")
        assert client.closed is None
        client.request_timeout = None
        with trio.move_on_after(0.2) as waited:  # no limit but the caller's own
            await client.join("s")
        assert waited.cancelled_caught
        assert client.connected


async def test_closed_is_set_when_the_server_dies() -> None:
    port = free_port()
    async with (
        running(serve_command(port), clean_env(), b"listening on") as node,
        connect(f"ws://127.0.0.1:{port}/ws", user_id="a") as client,
    ):
        node.process.send_signal(signal.SIGKILL)
        with trio.fail_after(5):
            closed = await client.wait_closed()  # without calling receive()
        assert closed.code == 1006
        assert client.closed is closed
        assert not client.connected
        with pytest.raises(ConnectionClosed):
            await client.join("s")


async def test_a_server_gone_silent_is_noticed_by_the_keepalive() -> None:
    port = free_port()
    async with (
        running(serve_command(port), clean_env(), b"listening on") as node,
        connect(f"ws://127.0.0.1:{port}/ws", user_id="a", keepalive=0.3) as client,
    ):
        node.process.send_signal(signal.SIGSTOP)  # no FIN, no answers
        try:
            with trio.fail_after(5):
                closed = await client.wait_closed()
        finally:
            node.process.send_signal(signal.SIGCONT)
    assert closed.code == 1006
    assert "did not answer a ping within 0.3 s" in closed.reason


def _drop(server: Server, user_id: str, code: int = 1001) -> None:
    for connection in list(server.hub.connections):
        if connection.user_id == user_id:
            connection.close(code, "going away (test)")


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(resume_window=0)])
async def test_reconnect_rejoins_and_says_so(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws"
    tokens: list[str] = []

    async def get_token() -> str:
        tokens.append("t")
        return "ignored in development auth"

    async with (
        connect(url, user_id="alice", reconnect=True, get_token=get_token) as alice,
        connect(url, user_id="bob") as bob,
    ):
        await alice.join("s")
        await bob.join("s")
        assert await alice.receive() == UserJoined(session_id="s", user_id="bob")
        first = alice.connection_id
        _drop(server, "alice")
        with trio.fail_after(10):
            event = await alice.receive()
        assert isinstance(event, Reconnected)
        assert [(j.session_id, j.participants) for j in event.sessions] == [("s", ["bob"])]
        assert alice.connection_id != first
        assert alice.connected
        assert len(tokens) == 2  # asked again for the new connection
        await alice.send_offer("bob", "s", CALL["offer"])
        with trio.fail_after(5):
            frame = await bob.receive()
            while not isinstance(frame, RelayedOffer):
                frame = await bob.receive()
        assert frame.from_ == "alice"


@pytest.mark.parametrize("settings", [TEST_SETTINGS.replace(resume_window=15)])
async def test_reconnect_resumes_with_the_held_frames_in_order(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws"
    async with (
        connect(url, user_id="alice", reconnect=True, encoding="msgpack") as alice,
        connect(url, user_id="bob") as bob,
    ):
        await alice.join("s")
        await bob.join("s")
        assert await alice.receive() == UserJoined(session_id="s", user_id="bob")
        first = alice.connection_id
        # the server drops alice (as a node restart does); bob's signals meanwhile are held
        _drop(server, "alice")
        for n in range(3):
            await bob.send_candidate("alice", "s", {**CALL["offerCandidates"][0], "sdpMid": str(n)})
        with trio.fail_after(10):
            event = await alice.receive()
            assert isinstance(event, Reconnected)
            assert event.resumed is True
            assert event.welcome.sessions == ["s"]
            held = [await alice.receive() for _ in range(3)]
        assert [f.data["candidate"]["sdpMid"] for f in held] == ["0", "1", "2"]  # type: ignore[union-attr]
        assert alice.connection_id == first
        assert alice.sessions == {"s"}
        # bob heard nothing, and the call's signaling goes on both ways
        await alice.send_offer("bob", "s", CALL["offer"])
        with trio.fail_after(5):
            frame = await bob.receive()
        assert isinstance(frame, RelayedOffer)
        await bob.send_answer("alice", "s", CALL["answer"])
        with trio.fail_after(5):
            assert isinstance(await alice.receive(), RelayedAnswer)


async def test_no_reconnect_after_a_code_that_will_not_pass(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws"
    async with connect(url, user_id="alice", reconnect=True) as alice:
        _drop(server, "alice", 4409)
        with trio.fail_after(5):
            closed = await alice.wait_closed()
    assert closed.code == 4409


def test_the_sdks_exceptions_are_what_their_users_catch() -> None:
    assert issubclass(ConnectTimeout, TimeoutError)
    assert issubclass(ConnectionFailed, ConnectionError)
    assert issubclass(RequestTimeout, TimeoutError)
    assert Client.wait_closed.__doc__
