"""A real WebRTC call in headless Chromium through our server (network namespace, loopback only)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def browser_run() -> dict[str, Any]:
    """Run tests/e2e/browser_call.py once inside ``unshare -n`` and read its findings."""
    assert Path("/usr/bin/chromium").exists(), "chromium is missing: ./dev test installs it"
    assert shutil.which("unshare"), "unshare (util-linux) is needed for the network namespace"
    result = subprocess.run(
        [
            "unshare",
            "-n",
            "--",
            sys.executable,
            str(ROOT / "tests/e2e/browser_call.py"),
            str(ROOT / "docs"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    findings: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return findings


def test_two_browsers_connect_and_see_each_others_video(browser_run: dict[str, Any]) -> None:
    assert browser_run["connected"] is True
    assert browser_run["alice_frames"] > 5
    assert browser_run["bob_frames"] > 5
    # every packet stayed on loopback: the selected pair is host-to-host on 127.0.0.1
    assert browser_run["pair"].startswith("host udp 127.0.0.1:")
    assert (ROOT / "docs" / "demo-call.png").stat().st_size > 10_000


def test_client_reconnects_and_rejoins_after_1001(browser_run: dict[str, Any]) -> None:
    assert browser_run["reconnected_connection_changed"] is True
    assert browser_run["rejoined"] == ["alice", "bob"]


def test_python_sdk_and_browser_exchange_signals(browser_run: dict[str, Any]) -> None:
    assert browser_run["python_side"] == {
        "offer_from": "dave",
        "offer_sdp_start": "v=0\r",
        "offer_type": "offer",
    }
    assert browser_run["answer_intact"] is True
    assert browser_run["answer_from"] == "carol"


async def test_demo_page_and_client_module_are_served(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        page = await http.get("/")
        module = await http.get("/client.js")
        types = await http.get("/client.d.ts")
    assert page.headers["content-type"].startswith("text/html")
    assert 'from "/client.js"' in page.text
    assert module.headers["content-type"].startswith("text/javascript")
    assert "export class SignalingClient" in module.text
    assert "export class PeerCall" in module.text
    assert "export class SignalingClient extends EventTarget" in types.text
