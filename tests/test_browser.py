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
def browser_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
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
            str(tmp_path_factory.getbasetemp()),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    findings: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return findings


def test_two_tabs_of_the_root_page_meet_in_one_call(browser_run: dict[str, Any]) -> None:
    # the README: open http://localhost:3001/ in two tabs, press the button in both
    assert browser_run["two_tabs_connected"] is True
    assert browser_run["default_session"] == "demo"
    assert browser_run["failed_requests"] == []
    assert browser_run["favicon_requested"] is False
    assert browser_run["link"].startswith("http://127.0.0.1:")
    assert browser_run["link"].endswith("/")


def test_three_tabs_make_a_group_call_with_video_from_everyone(
    browser_run: dict[str, Any],
) -> None:
    frames = browser_run["three_party_frames"]
    assert len(frames) == 3
    assert all(len(tiles) == 2 and min(tiles) > 5 for tiles in frames), frames
    # every packet stayed on loopback: the selected pair is host-to-host on 127.0.0.1
    assert browser_run["pair"].startswith("ICE pair: host udp 127.0.0.1:")
    assert Path(browser_run["screenshot"]).stat().st_size > 10_000


def test_one_hanging_up_leaves_the_others_in_their_call_and_can_rejoin(
    browser_run: dict[str, Any],
) -> None:
    assert browser_run["after_hangup"] == {
        "tiles": [1, 1],
        "states": ["connected", "connected"],
        "start_enabled": True,
    }
    assert browser_run["rejoined_three"] is True


def test_the_demo_shows_errors(browser_run: dict[str, Any]) -> None:
    assert "Could not join" in browser_run["long_user_error"]
    assert "userId" in browser_run["long_user_error"]
    assert browser_run["long_user_start_enabled"] is True
    assert "another tab" in browser_run["replaced_error"]
    assert browser_run["replaced_start_enabled"] is True
    assert browser_run["twin_in_call"] is True


def test_a_call_survives_a_drained_node_and_a_cut_connection(
    browser_run: dict[str, Any],
) -> None:
    """protocol/SPEC.md §10: resumed both times, the same RTCPeerConnection
    stays connected, video keeps decoding, the other side hears nothing, the
    page says "reconnecting…", and an ICE restart completes afterwards."""
    assert (
        browser_run["resumes"]
        == [
            {
                "sameConnectionId": True,
                "sameCall": True,
                "connectionState": "connected",
                "state": "connected",
            }
        ]
        * 2
    )
    # what the page said each time it tried again (once per drop, more if a try failed)
    assert len(browser_run["resume_shown"]) >= 2
    assert set(browser_run["resume_shown"]) == {"reconnecting… (the call goes on)"}
    assert "closed" not in browser_run["resume_call_states"]
    assert "failed" not in browser_run["resume_call_states"]
    assert browser_run["resume_rejoined"] == 0
    assert browser_run["resume_bob_heard"] == []
    assert browser_run["ice_restart_after_resume"] is True


def test_client_rejoins_when_it_is_too_late_to_resume(browser_run: dict[str, Any]) -> None:
    assert browser_run["rejoined_connection_changed"] is True
    assert browser_run["rejoined"] is True


def test_browser_client_reports_a_down_server_as_network_and_does_not_retry(
    browser_run: dict[str, Any],
) -> None:
    down = browser_run["down"]
    assert down["name"] == "SignalingError"
    assert down["code"] == "network"
    assert down["closeCode"] == 1006
    assert "could not reach" in down["message"]
    # one socket: a rejected connect() does not keep trying in the background
    assert down["sockets"] == 1
    # unless asked: connect({retry: true}) keeps trying until close()
    assert down["retryAttempts"] >= 3
    assert down["retryCode"] == "network"


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


def test_a_rolling_restart_of_two_nodes_keeps_the_call(browser_run: dict[str, Any]) -> None:
    """Two nodes and Redis behind nginx: the node holding the call's signaling is
    restarted, then the other. Both pages resume each time; the same
    RTCPeerConnections stay connected, video keeps coming, nobody hears a thing."""
    same = {"sameCall": True, "connectionState": "connected", "rejoined": 0, "heard": []}
    assert browser_run["rolling_restarts"] == [[same, same], [same, same]]
