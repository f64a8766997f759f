"""TLS on the one port: https:// and wss:// with a certificate made by trustme."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from signaling.client import connect
from signaling.frames import RelayedOffer
from signaling.server import Settings

from .conftest import TEST_SETTINGS, Server, chromium_call
from .test_cli import run_cli

CALL = chromium_call()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def settings(ca: trustme.CA, tmp_path: Path) -> Settings:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    return TEST_SETTINGS.replace(certfile=str(certfile), keyfile=str(keyfile))


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_wss_carries_a_call(server: Server, client_context: ssl.SSLContext) -> None:
    url = f"wss://127.0.0.1:{server.port}/ws"
    async with (
        connect(url, user_id="alice", ssl_context=client_context) as alice,
        connect(url, user_id="bob", encoding="msgpack", ssl_context=client_context) as bob,
    ):
        await alice.join("s")
        await bob.join("s")
        await alice.send_offer("bob", "s", CALL["offer"])
        with trio.fail_after(5):
            while not isinstance(frame := await bob.receive(), RelayedOffer):
                pass
        assert frame.data["sdp"]["sdp"] == CALL["offer"]["sdp"]


async def test_https_routes(server: Server, client_context: ssl.SSLContext) -> None:
    async with httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{server.port}", verify=client_context
    ) as http:
        assert (await http.get("/health")).json()["status"] == "ok"
        assert (await http.post("/turn/credentials")).json()["iceServers"]
        assert (await http.get("/metrics")).status_code == 200


async def test_untrusted_and_plaintext_clients_fail_alone(
    server: Server, client_context: ssl.SSLContext
) -> None:
    untrusting = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", server.port, ssl_context=ssl.create_default_context()
    )
    with pytest.raises(trio.BrokenResourceError) as caught:
        await untrusting.do_handshake()
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.HTTPError):
            await http.get(f"http://127.0.0.1:{server.port}/health")
    async with connect(
        f"wss://127.0.0.1:{server.port}/ws", user_id="alice", ssl_context=client_context
    ) as alice:
        assert alice.welcome is not None


def test_certificate_without_key_is_one_line(settings: Settings) -> None:
    result = run_cli("serve", "--certfile", settings.certfile)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "SSL_CERTFILE and SSL_KEYFILE" in lines[0]


def test_unloadable_certificate_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    result = run_cli("serve", "--port", "0", "--certfile", str(bad), "--keyfile", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "cannot load SSL_CERTFILE" in lines[-1]
    assert "Traceback" not in result.stderr


def test_swapped_certificate_and_key_are_named(settings: Settings) -> None:
    result = run_cli(
        "serve", "--port", "0", "--certfile", settings.keyfile, "--keyfile", settings.certfile
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "the two look swapped" in lines[0]
    assert "PEM lib" not in lines[0]


def test_a_key_of_another_certificate_is_named(
    settings: Settings, ca: trustme.CA, tmp_path: Path
) -> None:
    other = tmp_path / "other-key.pem"
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other))
    result = run_cli(
        "serve", "--port", "0", "--certfile", settings.certfile, "--keyfile", str(other)
    )
    assert result.returncode == 2
    assert "the private key does not belong to the certificate" in result.stderr
