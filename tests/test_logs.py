"""Logs: the old server's events, ids on every line, no tokens or SDP, JSON lines."""

from __future__ import annotations

import json
import logging
import os
import signal
from typing import Any

import pytest
import trio

from signaling.client import connect
from signaling.core.peer import describe_candidate
from signaling.server.logs import JsonFormatter, TextFormatter

from .conftest import TEST_SETTINGS, Server, chromium_call, start_server
from .test_cli import clean_env, free_port, running, serve_command

CALL = chromium_call()
TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLWJvZHk.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("candidate", "described"),
    [
        (CALL["offerCandidates"][0], "host udp"),
        (CALL["offerCandidates"][2], "host tcp"),
        (None, "end of candidates"),
        ({"candidate": ""}, "end of candidates (empty)"),
        (
            {"candidate": "candidate:1 1 UDP 1 203.0.113.9 3478 typ relay raddr 0.0.0.0"},
            "relay udp",
        ),
        ({"candidate": "garbage"}, "? ?"),
    ],
)
def test_candidate_type_and_protocol_are_parsed(candidate: object, described: str) -> None:
    assert describe_candidate(candidate) == described  # type: ignore[arg-type]


async def test_a_call_logs_each_event_with_ids_and_no_secrets(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    alice_gone = trio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("disconnected") and record.user_id == "alice":  # type: ignore[attr-defined]
                alice_gone.set()

    watch = Watch()
    logging.getLogger("signaling").addHandler(watch)
    with caplog.at_level(logging.DEBUG, logger="signaling"):
        async with (
            connect(server.url, user_id="alice", token=TOKEN) as alice,
            connect(server.url, user_id="bob") as bob,
        ):
            await alice.join("room")
            await bob.join("room")
            await alice.send_offer("bob", "room", CALL["offer"])
            await bob.send_answer("alice", "room", CALL["answer"])
            for candidate in CALL["offerCandidates"]:
                await alice.send_candidate("bob", "room", candidate)
            await alice.report_state("room", "connected")
            with trio.fail_after(5):
                for _ in range(1 + len(CALL["offerCandidates"])):
                    await bob.receive()
                await alice.receive()  # user-joined
                await alice.receive()  # the answer
            await bob.leave("room")
        with trio.fail_after(5):
            await alice_gone.wait()
    logging.getLogger("signaling").removeHandler(watch)
    ours = [r for r in caplog.records if r.name.startswith("signaling.")]
    messages = [(getattr(r, "user_id", None), r.getMessage()) for r in ours]
    for expected in [
        ("alice", "connected from 127.0.0.1"),
        ("alice", "authenticated"),
        ("bob", "joined session room"),
        ("alice", "offer to bob in session room"),
        ("bob", "answer to alice in session room"),
        ("alice", "ice-candidate to bob in session room: host udp"),
        ("alice", "ice-candidate to bob in session room: host tcp"),
        ("alice", "ice-candidate to bob in session room: end of candidates"),
        ("alice", "connection state in session room: connected"),
        ("bob", "left session room"),
        ("alice", "disconnected (1000, by the client)"),
    ]:
        assert any(
            user in (expected[0], None) and message.startswith(expected[1])
            for user, message in messages
        ), expected
    for record in ours:
        if record.name in {"signaling.peer", "signaling.connection"}:
            assert str(getattr(record, "connection_id", "")).startswith("c_"), record.getMessage()
        text = record.getMessage() + str(record.__dict__)
        assert TOKEN not in text
        assert "a=fingerprint" not in text
        assert "v=0" not in text
        assert "127.0.0.1 52356" not in text  # candidate addresses stay out


def test_formatters_put_the_ids_on_the_line() -> None:
    record = logging.LogRecord(
        "signaling.peer", logging.INFO, __file__, 1, "joined %s", ("s",), None
    )
    record.connection_id = "c_1"
    record.user_id = "alice"
    assert TextFormatter().format(record).endswith("signaling.peer [c_1 alice] joined s")
    entry = json.loads(JsonFormatter().format(record))
    assert entry | {"time": ""} == {
        "time": "",
        "level": "info",
        "logger": "signaling.peer",
        "message": "joined s",
        "connection_id": "c_1",
        "user_id": "alice",
    }


async def test_log_format_json_gives_json_lines() -> None:
    port = free_port()
    command = serve_command(port, "--log-format", "json")
    async with running(command, clean_env(), b"listening on") as server:
        async with connect(f"ws://127.0.0.1:{port}/ws", user_id="alice") as alice:
            await alice.join("s")
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            await server.stderr_closed.wait()
            await server.process.wait()
    lines = server.stderr.decode().strip().splitlines()
    entries = [json.loads(line) for line in lines]
    joined = [e for e in entries if e["message"] == "joined session s"]
    assert joined
    assert joined[0]["user_id"] == "alice"
    assert joined[0]["connection_id"].startswith("c_")
    assert os.linesep not in joined[0]["message"]


async def _until_closed(ws: Any) -> None:
    while True:
        await ws.get_message()


async def test_every_connection_logs_one_line_when_it_ends_with_its_code(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused auth (4401) and auth timeout (4408) too, not only authenticated users."""
    from trio_websocket import ConnectionClosed, open_websocket_url

    server = await start_server(
        nursery, TEST_SETTINGS.replace(token_secret="s" * 32, auth_timeout=0.3)
    )
    url = f"ws://127.0.0.1:{server.port}/ws"
    caplog.set_level(logging.INFO, logger="signaling")
    both_ended = trio.Event()
    ended: list[str] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("disconnected"):
                ended.append(record.getMessage())
                if len(ended) == 2:
                    both_ended.set()

    watch = Watch()
    logging.getLogger("signaling").addHandler(watch)
    async with open_websocket_url(url, subprotocols=["signaling.v1.json"]) as refused:
        await refused.send_message(json.dumps({"type": "auth", "userId": "a", "token": "bad"}))
        with pytest.raises(ConnectionClosed), trio.fail_after(5):
            await _until_closed(refused)
    async with open_websocket_url(url, subprotocols=["signaling.v1.json"]) as silent:
        with pytest.raises(ConnectionClosed), trio.fail_after(5):
            await silent.get_message()
    with trio.fail_after(5):
        await both_ended.wait()
    logging.getLogger("signaling").removeHandler(watch)
    ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("disconnected")]
    assert len(ends) == 2, ends
    assert ends[0].startswith("disconnected (4401: ")
    assert ends[0].endswith(", by the server)")
    assert ends[1] == "disconnected (4408: no auth frame within the auth timeout, by the server)"
    records = [r for r in caplog.records if r.getMessage().startswith("disconnected")]
    assert [r.event["close_code"] for r in records] == [4401, 4408]  # type: ignore[attr-defined]
