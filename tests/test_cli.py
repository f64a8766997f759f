"""The `signaling` command and configuration, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from signaling.client import connect
from signaling.server.config import SETTINGS, ConfigError, env_example, load_settings

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signaling", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        cwd=cwd or ROOT,
        timeout=60,
    )


def serve_command(port: int, *flags: str) -> list[str]:
    """``signaling serve`` on 127.0.0.1:``port`` with extra ``flags``."""
    return [
        sys.executable,
        "-m",
        "signaling",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *flags,
    ]


class Running:
    """A server process and everything it wrote to stderr so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stderr = b""
        self.stderr_closed = trio.Event()

    async def drain(self, stream: trio.abc.ReceiveStream) -> None:
        # Keep reading: a full pipe would block the server on its next log line.
        while chunk := await stream.receive_some():
            self.stderr += chunk
        self.stderr_closed.set()


@asynccontextmanager
async def running(
    command: list[str], env: dict[str, str], ready: bytes, times: int = 1
) -> AsyncIterator[Running]:
    """Start a server process and wait until it prints ``ready`` on stderr (``times`` times)."""
    process = await trio.lowlevel.open_process(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=ROOT
    )
    assert process.stderr is not None
    server = Running(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.drain, process.stderr)
            with trio.fail_after(30):
                while server.stderr.count(ready) < times:
                    assert process.poll() is None, f"exited early: {server.stderr.decode()}"
                    await trio.sleep(0.05)
            yield server
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def test_bad_environment_value_stops_start_up_with_one_line() -> None:
    result = run_cli("serve", env=clean_env(SIGNALING_SERVER_PORT="abc"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "SIGNALING_SERVER_PORT='abc'" in lines[0]
    assert "whole number" in lines[0]


def test_an_unknown_flag_shows_the_commands_own_usage() -> None:
    result = run_cli("serve", "--max-participant", "4")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: signaling serve ")
    assert "--max-participants" in result.stderr  # serve's flags, to pick the right one
    assert result.stderr.strip().endswith(
        "signaling serve: error: unrecognized arguments: --max-participant 4"
    )


def test_bad_flag_value_names_the_flag() -> None:
    result = run_cli("serve", "--max-participants", "0")
    assert result.returncode == 2
    assert "--max-participants='0'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["-1", "1001", "soon"])
def test_a_cluster_flush_that_cannot_work_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"SIGNALING_CLUSTER_FLUSH_MS.*milliseconds"):
        load_settings(environ={"SIGNALING_CLUSTER_FLUSH_MS": value}, env_file=None)


def test_bad_origin_is_explained() -> None:
    result = run_cli("serve", env=clean_env(ALLOWED_ORIGINS="app.example.com"))
    assert result.returncode == 2
    assert "ALLOWED_ORIGINS" in result.stderr
    assert "https://app.example.com" in result.stderr


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("app.example.com", "not an origin like https://app.example.com"),
        ("a;b", "not an origin like"),
        ("https://a;b", "is not a host name"),
        ("https://app.*.example.com", "a wildcard can only be the whole first label"),
        ("https://*example.com", "a wildcard can only be the whole first label"),
        ("https://a.com/", "drop the trailing '/'"),
        ("https://a.com/app", "no path, query or fragment"),
        ("https://user@a.com", "no user name"),
        ("https://a.com:99999", "not a port"),
        ("https://ok.com,https://a.com:x", "'https://a.com:x': 'x' is not a port"),
    ],
)
def test_an_origin_that_can_never_match_is_refused_in_one_line(value: str, says: str) -> None:
    result = run_cli("serve", env=clean_env(ALLOWED_ORIGINS=value))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("signaling: configuration error: ALLOWED_ORIGINS=")
    assert says in lines[0]


def test_origins_are_stored_as_browsers_send_them() -> None:
    settings = load_settings(
        environ={
            "ALLOWED_ORIGINS": "HTTPS://A.COM, https://a.com:443, http://b.com:8080, "
            "https://*.Example.com, http://[0:0::1]:80, https://bücher.de, capacitor://localhost"
        },
        env_file=None,
    )
    assert settings.allowed_origins == (
        "https://a.com",
        "http://b.com:8080",
        "https://*.example.com",
        "http://[::1]",
        "https://xn--bcher-kva.de",
        "capacitor://localhost",
    )


def test_a_missing_env_file_is_an_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--env-file", str(tmp_path / "nope.env"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"signaling: configuration error: --env-file {str(tmp_path / 'nope.env')!r}: no such file"
    )


def test_an_unknown_setting_is_named_with_the_closest(tmp_path: Path) -> None:
    dotenv = tmp_path / "settings.env"
    dotenv.write_text("SIGNALING_MAX_PARTICIPANT=4\nREDIS_ULR=redis://x\nNODE_ENV=production\n")
    warnings: list[str] = []
    environ = {"SIGNALING_PING_INTERVALL": "5", "HOME": "/root", "REDIS_HOST": "x"}
    load_settings(environ=environ, env_file=dotenv, warnings=warnings)
    # in the file, anything that starts like ours; in the environment, SIGNALING_* only
    assert warnings == [
        f"{dotenv}: SIGNALING_MAX_PARTICIPANT is not a setting and is ignored "
        "(did you mean SIGNALING_MAX_PARTICIPANTS?)",
        f"{dotenv}: REDIS_ULR is not a setting and is ignored (did you mean REDIS_URL?)",
        "SIGNALING_PING_INTERVALL is not a setting and is ignored "
        "(did you mean SIGNALING_PING_INTERVAL?)",
    ]


async def test_serve_logs_the_unknown_setting_warning(tmp_path: Path) -> None:
    dotenv = tmp_path / "settings.env"
    dotenv.write_text("SIGNALING_MAX_PARTICIPANT=4\n")
    port = free_port()
    command = serve_command(port, "--env-file", str(dotenv))
    async with running(command, clean_env(), b"listening on") as server:
        pass
    assert (
        b"WARNING signaling.config "
        + f"{dotenv}: SIGNALING_MAX_PARTICIPANT is not a setting".encode()
        in server.stderr
    )


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.strip().splitlines()[-1]


def test_precedence_is_flag_then_environment_then_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "SIGNALING_SERVER_PORT=4000\nSIGNALING_MAX_PARTICIPANTS=5\nSTUN_URLS=stun:a:1\n"
    )
    settings = load_settings(
        {"port": "6000"},
        environ={"SIGNALING_SERVER_PORT": "5000", "SIGNALING_MAX_PARTICIPANTS": "7"},
        env_file=dotenv,
    )
    assert settings.port == 6000
    assert settings.max_participants == 7
    assert settings.stun_urls == ("stun:a:1",)
    settings = load_settings(environ={}, env_file=dotenv)
    assert (settings.port, settings.max_participants) == (4000, 5)


def test_dotenv_error_names_the_file(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("STUN_URLS=http://nope\n")
    with pytest.raises(ConfigError, match=r"STUN_URLS \(in .*\.env\)"):
        load_settings(environ={}, env_file=dotenv)


def test_defaults() -> None:
    settings = load_settings(environ={}, env_file=None)
    assert settings.port == 3001
    assert settings.allowed_origins == ()
    assert settings.stun_urls == ("stun:stun.l.google.com:19302", "stun:stun1.l.google.com:19302")


def test_env_example_lists_every_setting_with_its_default() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == env_example()
    for setting in SETTINGS:
        assert f"{setting.env}={setting.default}\n" in text


def test_the_configuration_guide_documents_every_setting_as_the_code_does() -> None:
    guide = (ROOT / "docs" / "configuration.md").read_text()
    for setting in SETTINGS:
        default = f"`{setting.default}`" if setting.default else "(empty)"
        row = f"| `{setting.env}` | `{setting.flag}` | {default} | {setting.help} |"
        assert row in guide, row


async def test_sigterm_drains_closes_1001_and_exits_0() -> None:
    port = free_port()
    command = serve_command(port)
    async with (
        running(command, clean_env(), b"listening on") as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        assert b"development auth" in server.stderr
        process = server.process
        health = await http.get("/health")
        assert health.json()["status"] == "ok"
        # a client that will not answer the close handshake keeps the node draining
        stubborn = await trio.open_tcp_stream("127.0.0.1", port)
        await stubborn.send_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert b" 101 " in await stubborn.receive_some(4096)
        # a health check whose connection was open before the signal
        checker = await trio.open_tcp_stream("127.0.0.1", port)
        async with connect(f"ws://127.0.0.1:{port}/ws", user_id="alice") as alice:
            await alice.join("s")
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                frames = [frame async for frame in alice]
            assert frames == []
            assert alice.closed is not None
            assert alice.closed.code == 1001
        await checker.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        draining = b""
        with trio.fail_after(5):
            while chunk := await checker.receive_some(4096):
                draining += chunk
        assert draining.startswith(b"HTTP/1.1 503 ")
        assert b'"status":"draining"' in draining.replace(b" ", b"")
        with pytest.raises(OSError, match="all attempts to connect"):
            await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(15):
            assert await process.wait() == 0
        await stubborn.aclose()


async def test_env_port_is_used() -> None:
    port = free_port()
    env = clean_env(SIGNALING_SERVER_PORT=str(port), SIGNALING_HOST="127.0.0.1")
    command = [sys.executable, "-m", "signaling", "serve"]
    async with running(command, env, b"listening on") as server:
        process = server.process
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
        process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await process.wait() == 0


HYPERCORN = [
    sys.executable,
    "-m",
    "hypercorn",
    "-k",
    "trio",
    "-c",
    "python:signaling.server.hypercorn_config",
    "signaling.server.app:create_app()",
]


def hypercorn_env(port: int, **extra: str) -> dict[str, str]:
    # hypercorn's ping task outlives a closed WebSocket until its next tick, so
    # its shutdown waits for the graceful timeout: keep that short here.
    return clean_env(
        SIGNALING_SERVER_PORT=str(port),
        SIGNALING_HOST="127.0.0.1",
        SIGNALING_GRACEFUL_TIMEOUT="1",
        **extra,
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_app_factory_under_the_hypercorn_command(log_format: str) -> None:
    port = free_port()
    env = hypercorn_env(port, SIGNALING_LOG_FORMAT=log_format)
    async with running(HYPERCORN, env, b"Running on") as server:
        process = server.process
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
        url = f"ws://127.0.0.1:{port}/ws"
        async with connect(url, user_id="alice") as alice, connect(url, user_id="bob") as bob:
            await alice.join("s")
            assert (await bob.join("s")).participants == ["alice"]
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await process.wait()
            await server.stderr_closed.wait()
    lines = server.stderr.decode().splitlines()
    # our logging is configured on this path too, in the format asked for
    if log_format == "json":
        entries = [json.loads(line) for line in lines]  # every line is JSON
        messages = [(entry["logger"], entry["message"]) for entry in entries]
    else:
        messages = [(line.split()[3], line) for line in lines]
    assert any(logger == "hypercorn.error" and "Running on" in m for logger, m in messages)
    assert sum("Running on" in m for _, m in messages) == 1  # once, not twice
    assert any(logger == "signaling.peer" and "joined session s" in m for logger, m in messages)
    assert any(logger == "signaling.connection" and "connected from" in m for logger, m in messages)
    assert any("disconnected (1000" in m for _, m in messages), "\n".join(lines)


def test_hypercorn_with_workers_and_no_redis_is_refused_in_one_line() -> None:
    result = subprocess.run(
        [*HYPERCORN[:5], "-w", "4", *HYPERCORN[5:]],
        capture_output=True,
        text=True,
        timeout=60,
        env=hypercorn_env(free_port()),
        cwd=ROOT,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "-w 4 needs REDIS_URL" in lines[0]


def test_hypercorn_workers_started_from_code_refuse_too() -> None:
    """No command line to read: each worker sees the server's own ``Config.workers``."""
    program = (
        "import sys; from hypercorn.config import Config; from hypercorn.run import run; "
        "config = Config.from_object('signaling.server.hypercorn_config'); "
        "config.worker_class = 'trio'; config.workers = 2; "
        "config.application_path = 'signaling.server.app:create_app()'; sys.exit(run(config))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env=hypercorn_env(free_port()),
        cwd=ROOT,
    )
    # (no exit status to check: hypercorn 0.18's run() stops every worker when
    # one fails, then returns the status of the last one it joined, often 0)
    lines = set(result.stderr.strip().splitlines())
    assert len(lines) == 1, result.stderr  # each worker that got that far says the same
    assert "2 hypercorn workers need REDIS_URL" in lines.pop()
    assert "Traceback" not in result.stderr


def test_a_bad_setting_stops_hypercorn_in_one_line() -> None:
    result = subprocess.run(
        HYPERCORN,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(SIGNALING_SERVER_PORT="abc"),
        cwd=ROOT,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SIGNALING_SERVER_PORT='abc'" in lines[0]


async def test_hypercorn_workers_with_redis_share_sessions_and_name_themselves(
    redis_url: str,
) -> None:
    port = free_port()
    env = hypercorn_env(port, REDIS_URL=redis_url)
    command = [*HYPERCORN[:5], "-w", "2", *HYPERCORN[5:]]
    async with running(command, env, b"joined the cluster", times=2) as server:
        url = f"ws://127.0.0.1:{port}/ws"
        for pair in range(8):
            async with connect(url, user_id=f"a{pair}") as a, connect(url, user_id=f"b{pair}") as b:
                await a.join(f"s{pair}")
                assert (await b.join(f"s{pair}")).participants == [f"a{pair}"]
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await server.process.wait()
    cluster_lines = [
        line for line in server.stderr.decode().splitlines() if "joined the cluster" in line
    ]
    # each worker's lines carry its worker (pid) and node id
    assert len({line.split("] ")[0].split("[", 1)[1] for line in cluster_lines}) == 2
    assert all("worker=" in line and "node=" in line for line in cluster_lines)


def test_a_serving_process_keeps_the_collector_off_the_relay_path() -> None:
    """``signaling serve`` freezes its start-up objects and collects per 50,000 allocations
    (bench/RESULTS.md: CPython's defaults cost 137 ms pauses at 20,000 messages/s)."""
    probe = (
        "import gc; from signaling.server.serve import GC_THRESHOLDS, tune_gc; tune_gc(); "
        "assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold(); "
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count(); print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.stdout.strip() == "ok", result.stderr
    cli = (ROOT / "signaling" / "cli.py").read_text()
    assert "tune_gc()" in cli.split("def _run_serve", 1)[1].split("def _run_schema", 1)[0]


def test_dev_serve_installs_the_runtime_only(tmp_path: Path) -> None:
    """``./dev serve`` sets up what the server needs; the test tools come with ``./dev test``."""
    shutil.copy(ROOT / "dev", tmp_path / "dev")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    # stand-ins for the venv's python (pip) and console script: they record their calls
    for name in ("python", "signaling"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
        stub.chmod(0o755)
    result = subprocess.run(
        ["bash", str(tmp_path / "dev"), "serve", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert "python -m pip install --quiet -e ." in calls
    assert not any("[dev]" in call for call in calls), calls
    assert calls[-1] == "signaling serve --port 1"
    # a second run installs nothing
    log.write_text("")
    subprocess.run(["bash", str(tmp_path / "dev"), "serve"], check=True, timeout=60)
    assert log.read_text().splitlines() == ["signaling serve"]


def test_the_version_is_written_once() -> None:
    """``signaling.__version__`` is the version; the package metadata and
    ``signaling --version`` read it from there."""
    import importlib.metadata
    import tomllib

    import signaling

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    assert importlib.metadata.version("signaling") == signaling.__version__
    assert run_cli("--version").stdout.strip() == f"signaling {signaling.__version__}"
