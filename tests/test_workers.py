"""``signaling serve --workers N``: several processes on one port, sharing Redis."""

from __future__ import annotations

import signal

import httpx
import psutil
import trio

from signaling.client import connect
from signaling.frames import RelayedOffer, UserJoined

from .conftest import chromium_call
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
