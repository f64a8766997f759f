"""``signaling serve --workers N``: several processes on one port, sharing Redis."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest
import trio
import trustme

from signaling.client import connect
from signaling.frames import RelayedOffer, UserJoined

from .conftest import SOCKETIO_DIR, chromium_call
from .test_cli import clean_env, free_port, run_cli, running, serve_command

CALL = chromium_call()


def test_workers_without_redis_are_refused() -> None:
    result = run_cli("serve", "--workers", "2")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--workers 2 needs REDIS_URL" in lines[0]


async def test_two_workers_share_the_port_and_the_sessions(redis_url: str) -> None:
    port = free_port()
    command = serve_command(port, "--workers", "2", "--redis-url", redis_url)
    # the supervisor and each worker say "listening on"
    async with running(command, clean_env(), b"listening on", times=3) as supervisor:
        workers = psutil.Process(supervisor.process.pid).children()
        assert len(workers) == 2
        url = f"ws://127.0.0.1:{port}/ws"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/health")).json()["status"] == "ok"
        for n in range(10):
            async with connect(url, user_id=f"a{n}") as a, connect(url, user_id=f"b{n}") as b:
                await a.join(f"s{n}")
                assert (await b.join(f"s{n}")).participants == [f"a{n}"]
                with trio.fail_after(5):
                    assert await a.receive() == UserJoined(session_id=f"s{n}", user_id=f"b{n}")
                await a.send_offer(f"b{n}", f"s{n}", CALL["offer"])
                with trio.fail_after(5):
                    offer = await b.receive()
                assert isinstance(offer, RelayedOffer)
                assert offer.from_ == f"a{n}"
        supervisor.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await supervisor.process.wait() == 0
        assert not any(worker.is_running() and worker.status() != "zombie" for worker in workers)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_socketio_default_transports_over_two_workers(
    redis_url: str, node_modules: Path, tmp_path: Path, tls: bool
) -> None:
    """socket.io-client starts on long-polling: every request of a session reaches the
    worker that holds it, whichever worker the kernel gave the connection to (over TLS
    the connection cannot move: the worker that has it relays its bytes)."""
    port = free_port()
    flags = ["--workers", "2", "--redis-url", redis_url]
    node_env = dict(os.environ)
    if tls:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        flags += [
            "--certfile",
            str(tmp_path / "server.pem"),
            "--keyfile",
            str(tmp_path / "server.pem"),
        ]
        node_env["NODE_EXTRA_CA_CERTS"] = str(tmp_path / "ca.pem")
    command = serve_command(port, *flags)
    scheme = "https" if tls else "http"
    async with running(command, clean_env(), b"listening on", times=3) as supervisor:
        with trio.fail_after(60):
            result = await trio.run_process(
                ["node", str(SOCKETIO_DIR / "pairs.mjs"), f"{scheme}://127.0.0.1:{port}", "20"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=SOCKETIO_DIR,
                env=node_env,
            )
        supervisor.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await supervisor.process.wait()
    outcome = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert outcome["failures"] == []
    assert outcome["ok"] == 20
    assert outcome["upgraded"] == 40  # every client moved on to WebSocket
