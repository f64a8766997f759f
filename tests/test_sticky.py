"""Separate nodes behind nginx: the sticky-session settings of docs/deployment.md, for real.

Two ``signaling serve`` nodes share one Redis behind a real nginx configured as
the docs say (``hash $remote_addr consistent``, WebSocket upgrade headers).
socket.io-client with its default transports (long-polling, then WebSocket)
connects from 40 loopback addresses, so the clients spread over both nodes and
each pair's call crosses nodes through Redis.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

import trio

from .conftest import SOCKETIO_DIR
from .test_cli import clean_env, free_port, running, serve_command

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "deployment.md"


def nginx_config(port: int, nodes: list[int], folder: Path) -> str:
    """docs/deployment.md's nginx block, on our ports, as a whole nginx.conf."""
    text = DOCS.read_text()
    # the sticky-session block (the page also shows a single-node proxy block)
    block = re.search(r"```nginx\n(upstream signaling.*?)```", text, re.S)
    assert block is not None, "docs/deployment.md has an nginx block"
    conf = block.group(1)
    # the block's servers, 10.0.0.1 and 10.0.0.2, become ours (their options kept)
    conf = re.sub(r"10\.0\.0\.(\d+):3001", lambda m: f"127.0.0.1:{nodes[int(m[1]) - 1]}", conf)
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    assert f"127.0.0.1:{nodes[1]}" in conf
    assert f"127.0.0.1:{port}" in conf
    return f"""
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
{conf}
}}
"""


async def test_socketio_clients_behind_nginx_with_two_nodes(
    redis_url: str, node_modules: Path, tmp_path: Path
) -> None:
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    assert nginx, "nginx is missing: ./dev test installs it"
    nodes = [free_port(), free_port()]
    port = free_port()
    (tmp_path / "nginx.conf").write_text(nginx_config(port, nodes, tmp_path))
    env = clean_env(SIGNALING_TRUSTED_PROXIES="127.0.0.1/32", SIGNALING_MAX_CONNECTIONS_PER_IP="0")
    async with (
        running(serve_command(nodes[0], "--redis-url", redis_url), env, b"listening on") as a,
        running(serve_command(nodes[1], "--redis-url", redis_url), env, b"listening on") as b,
    ):
        proxy = await trio.lowlevel.open_process(
            [nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with trio.fail_after(10):
                while True:
                    try:
                        await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        await trio.sleep(0.05)
            with trio.fail_after(60):
                result = await trio.run_process(
                    [
                        "node",
                        str(SOCKETIO_DIR / "pairs.mjs"),
                        f"http://127.0.0.1:{port}",
                        "20",
                        "spread",
                    ],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    cwd=SOCKETIO_DIR,
                )
        finally:
            proxy.send_signal(signal.SIGQUIT)
            with trio.move_on_after(10):
                await proxy.wait()
            if proxy.returncode is None:
                proxy.kill()
        for node in (a, b):
            node.process.send_signal(signal.SIGTERM)
    outcome = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert outcome["failures"] == [], (tmp_path / "error.log").read_text()[-2000:]
    assert outcome["ok"] == 20
    assert outcome["upgraded"] == 40
    # both nodes served clients (each logs the client address nginx forwarded)
    served = [set(re.findall(rb"connected from (127\.0\.0\.\d+)", n.stderr)) for n in (a, b)]
    assert served[0], served
    assert served[1], served
    assert not served[0] & served[1]  # sticky: an address stays on its node
