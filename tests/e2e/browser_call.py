"""Two Chromium pages call each other through our server, inside a network namespace.

Run by tests/test_browser.py as ``unshare -n -- python tests/e2e/browser_call.py``:
the namespace has only the loopback interface, so every packet of the call,
signaling and media, stays on 127.0.0.1. Prints one JSON object of findings.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any

import trio
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from signaling.client import connect  # noqa: E402
from signaling.server import Hub, Settings, serve  # noqa: E402

CHROMIUM_FLAGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class ServerThread:
    """Our server on 127.0.0.1 in a thread of its own (Playwright's sync API owns this one)."""

    def __init__(self) -> None:
        self.hub = Hub(Settings(host="127.0.0.1", port=0, rate_limit=0))
        started: queue.Queue[tuple[int, trio.lowlevel.TrioToken]] = queue.Queue()
        self._stop = trio.Event()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(
                    partial(
                        serve, self.hub.settings, hub=self.hub, shutdown_trigger=self._stop.wait
                    )
                )
                started.put((port, trio.lowlevel.current_trio_token()))

        self.thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        self.thread.start()
        self.port, self.token = started.get(timeout=30)

    def run(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def run_sync(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def stop(self) -> None:
        self.run_sync(self._stop.set)
        self.thread.join(timeout=30)


CONSOLE: list[str] = []
PAGES: list[Any] = []


def open_page(browser: Any, port: int, user: str, session: str) -> Any:
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    page = context.new_page()
    page.on("console", lambda message: CONSOLE.append(f"{user}: {message.text}"))
    page.on("pageerror", lambda error: CONSOLE.append(f"{user} error: {error}"))
    PAGES.append(page)
    page.goto(f"http://127.0.0.1:{port}/?session={session}&user={user}")
    page.click("#start")
    return page


def wait_state(page: Any, state: str, timeout: float = 30_000) -> None:
    try:
        page.wait_for_function(f"document.body.dataset.state === {state!r}", timeout=timeout)
    except Exception:
        details = [
            other.evaluate(
                "JSON.stringify({user: window.demo.userId, state: document.body.dataset.state,"
                " calls: [...window.demo.calls].map(([peer, c]) => [peer, c.pc.signalingState,"
                " c.pc.iceConnectionState, c.pc.connectionState, c.makingOffer, c.ignoreOffer,"
                " c.pc.getSenders().length, c.negotiations])})"
            )
            for other in PAGES
        ]
        raise RuntimeError(
            f"{page.url} waiting for {state!r}: {details}; console: {CONSOLE}"
        ) from None


def main(out: Path) -> dict[str, Any]:
    server = ServerThread()
    result: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS
        )
        # 1. a real call between two pages
        alice = open_page(browser, server.port, "alice", "e2e")
        wait_state(alice, "waiting for someone to join")
        # alice answers bob's offer: no glare on the first negotiation
        bob = open_page(browser, server.port, "bob", "e2e")
        wait_state(alice, "connected")
        wait_state(bob, "connected")
        result["connected"] = True
        for name, page in (("alice", alice), ("bob", bob)):
            page.wait_for_function(
                "(() => { const v = document.querySelector('#remote'); return v.videoWidth > 0"
                " && v.getVideoPlaybackQuality().totalVideoFrames > 5; })()",
                timeout=30_000,
            )
            result[f"{name}_frames"] = page.evaluate(
                "document.querySelector('#remote').getVideoPlaybackQuality().totalVideoFrames"
            )
        alice.wait_for_function("document.querySelector('#pair').textContent.includes('host')")
        result["pair"] = alice.inner_text("#pair")
        out.mkdir(parents=True, exist_ok=True)
        alice.screenshot(path=str(out / "demo-call.png"))

        # 2. the server drops alice's connection with 1001: the client reconnects and re-joins
        before = alice.evaluate("window.demo.client.connectionId")
        alice.evaluate(
            "window.demo.client.addEventListener('reconnected', () => { window.rejoined = true; })"
        )

        def drop_alice() -> None:
            for connection in list(server.hub.connections):
                if connection.user_id == "alice":
                    connection.close(1001, "going away (test)")

        server.run_sync(drop_alice)
        alice.wait_for_function("window.rejoined === true", timeout=30_000)
        result["reconnected_connection_changed"] = (
            alice.evaluate("window.demo.client.connectionId") != before
        )
        result["rejoined"] = server.run_sync(
            lambda: sorted(server.hub.registry.participants("e2e"))
        )

        # 3. the Python SDK on one side, the browser on the other, signaling only
        async def python_side() -> dict[str, Any]:
            async with connect(f"ws://127.0.0.1:{server.port}/ws", user_id="carol") as carol:
                await carol.join("mixed")
                with trio.fail_after(30):
                    while True:
                        frame = await carol.receive()
                        if type(frame).__name__ == "RelayedOffer":
                            break
                call = json.loads((ROOT / "tests/fixtures/chromium-call.json").read_text())
                await carol.send_answer("dave", "mixed", call["answer"])
                return {
                    "offer_from": frame.from_,
                    "offer_sdp_start": frame.data["sdp"]["sdp"][:4],
                    "offer_type": frame.data["sdp"]["type"],
                    "answer": call["answer"],
                }

        holder: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: holder.update(server.run(python_side)))
        thread.start()
        dave = browser.new_context().new_page()
        dave.goto(f"http://127.0.0.1:{server.port}/?session=mixed&user=dave")
        dave.evaluate(
            "window.demo.client.addEventListener('answer', e => { window.lastAnswer = e.detail; })"
        )
        while not server.run_sync(lambda: "carol" in server.hub.registry.participants("mixed")):
            dave.wait_for_timeout(50)
        dave.click("#start")
        dave.wait_for_function("window.lastAnswer !== undefined", timeout=30_000)
        thread.join(timeout=30)
        received = dave.evaluate("window.lastAnswer")
        result["python_side"] = {k: v for k, v in holder.items() if k != "answer"}
        result["answer_intact"] = received["data"]["sdp"] == holder["answer"]
        result["answer_from"] = received["from"]
        browser.close()
    server.stop()
    return result


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    print(json.dumps(main(Path(sys.argv[1]))))
