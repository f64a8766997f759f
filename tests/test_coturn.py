"""TURN REST credentials minted by our endpoint, used against a real coturn.

Starts Debian's ``turnserver`` on 127.0.0.1 with ``use-auth-secret`` and a
``turnutils_peer`` echo peer, then allocates relays with ``turnutils_uclient``
(same package) using what ``POST /turn/credentials`` handed out.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from signaling.server.ice import rest_credentials

from .conftest import TEST_SETTINGS, Server

SECRET = "coturn-shared-secret"

assert shutil.which("turnserver"), (
    "coturn is missing: ./dev test installs it (apt-get install coturn)"
)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_tcp_and_udp_port() -> int:
    for _ in range(50):
        port = free_port(socket.SOCK_STREAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


@dataclass
class Coturn:
    port: int
    peer_port: int


@pytest.fixture
async def coturn(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Coturn]:
    port = free_tcp_and_udp_port()
    peer_port = free_port(socket.SOCK_DGRAM)
    server = await trio.lowlevel.open_process(
        [
            "turnserver",
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            "--use-auth-secret",
            f"--static-auth-secret={SECRET}",
            "--realm=signaling.test",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--allow-loopback-peers",
            f"--userdb={tmp_path / 'turndb'}",
            f"--pidfile={tmp_path / 'turnserver.pid'}",
            "--log-file=stdout",
            "--simple-log",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    peer = await trio.lowlevel.open_process(
        ["turnutils_peer", "-L", "127.0.0.1", "-p", str(peer_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = bytearray()
    ready = trio.Event()

    async def read_log() -> None:
        assert server.stdout is not None
        while chunk := await server.stdout.receive_some():
            log.extend(chunk)
            # the auth database opens last: from then on allocations are answered
            if b"DB connection success" in log:
                ready.set()

    nursery.start_soon(read_log)
    try:
        with trio.fail_after(20):
            await ready.wait()
        yield Coturn(port, peer_port)
    finally:
        for process in (server, peer):
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            process.kill()


@pytest.fixture
def settings(coturn: Coturn) -> Any:
    return TEST_SETTINGS.replace(
        turn_provider="rest",
        turn_rest_secret=SECRET,
        turn_rest_urls=(
            f"turn:127.0.0.1:{coturn.port}?transport=udp",
            f"turn:127.0.0.1:{coturn.port}?transport=tcp",
        ),
        turn_ttl=600,
    )


async def allocate(coturn: Coturn, username: str, credential: str, *, tcp: bool = False) -> str:
    """Allocate a relay and bounce three messages off the echo peer; return the report."""
    command = [
        "turnutils_uclient",
        "-p",
        str(coturn.port),
        "-u",
        username,
        "-w",
        credential,
        "-n",
        "3",
        "-m",
        "1",
        "-e",
        "127.0.0.1",
        "-r",
        str(coturn.peer_port),
        "-X",
        *(["-t"] if tcp else []),
        "127.0.0.1",
    ]
    with trio.fail_after(30):
        result = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
    report = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    return f"rc={result.returncode}\n{report}"


async def mint(server: Server, user_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http) as http:
        body = (await http.post("/turn/credentials", json={"userId": user_id})).json()
    *stun, turn = body["iceServers"]
    assert all(entry["urls"].startswith("stun:") for entry in stun)
    result: dict[str, Any] = turn
    return result


async def test_minted_credentials_allocate_a_relay_on_coturn(
    server: Server, coturn: Coturn
) -> None:
    turn = await mint(server, "alice")
    expiry, _, user = turn["username"].partition(":")
    assert user == "alice"
    assert 590 <= int(expiry) - time.time() <= 600
    for tcp in (False, True):
        report = await allocate(coturn, turn["username"], turn["credential"], tcp=tcp)
        assert report.startswith("rc=0"), report
        # every message went through the relay to the echo peer and back
        assert "Total lost packets 0 (0.000000%)" in report, report


async def test_wrong_secret_is_refused_by_coturn(coturn: Coturn) -> None:
    username, credential = rest_credentials("not-the-secret", "alice", 600, time.time())
    report = await allocate(coturn, username, credential)
    assert not report.startswith("rc=0"), report
    assert "Cannot complete Allocation" in report


async def test_expired_username_is_refused_by_coturn(coturn: Coturn) -> None:
    username, credential = rest_credentials(SECRET, "alice", -60, time.time())
    report = await allocate(coturn, username, credential)
    assert not report.startswith("rc=0"), report
    assert "Cannot complete Allocation" in report
