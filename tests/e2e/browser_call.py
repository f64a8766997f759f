"""Chromium pages call each other through our server, inside a network namespace.

Run by tests/test_browser.py as ``unshare -n -- python tests/e2e/browser_call.py DIR``:
the namespace has only the loopback interface, so every packet of the call,
signaling and media, stays on 127.0.0.1. Prints one JSON object of findings and
saves a screenshot of the three-party call as DIR/demo-call.png. The README's
picture is refreshed with (as root, from the repository)::

    unshare -n -- .venv/bin/python tests/e2e/browser_call.py docs
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from signaling.client import RelayedOffer, connect  # noqa: E402
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

    def __init__(self, settings: Settings | None = None) -> None:
        self.hub = Hub(settings or Settings(host="127.0.0.1", port=0, rate_limit=0))
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
REQUESTED: list[str] = []
FAILED: list[str] = []


def open_page(browser: Any, url: str, name: str) -> Any:
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    page.on("console", lambda message: CONSOLE.append(f"{name}: {message.text}"))
    page.on("pageerror", lambda error: CONSOLE.append(f"{name} error: {error}"))
    page.on("request", lambda request: REQUESTED.append(request.url))
    page.on("response", lambda r: FAILED.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    PAGES.append(page)
    page.goto(url)
    return page


def diagnose(page: Any, what: str) -> RuntimeError:
    details = [
        other.evaluate(
            "JSON.stringify({user: window.demo.userId, state: document.body.dataset.state,"
            " error: document.body.dataset.error,"
            " calls: [...window.demo.calls].map(([peer, c]) => [peer, c.pc.signalingState,"
            " c.pc.iceConnectionState, c.pc.connectionState, c.makingOffer, c.ignoreOffer,"
            " c.pc.getSenders().length, c.negotiations])})"
        )
        for other in PAGES
        if not other.is_closed()
    ]
    return RuntimeError(f"{page.url} waiting for {what}: {details}; console: {CONSOLE}")


def wait_for(page: Any, condition: str, timeout: float = 30_000) -> None:
    try:
        page.wait_for_function(condition, timeout=timeout)
    except Exception:
        raise diagnose(page, condition) from None


def wait_state(page: Any, state: str, timeout: float = 30_000) -> None:
    wait_for(page, f"document.body.dataset.state === {state!r}", timeout)


def wait_peers(page: Any, count: int) -> None:
    """Wait until ``page`` shows ``count`` remote tiles, all connected and decoding video."""
    wait_for(
        page,
        f"""(() => {{
          const tiles = [...document.querySelectorAll('.tile.remote')];
          return tiles.length === {count} && document.body.dataset.state === 'connected'
            && tiles.every(t => t.dataset.state === 'connected') && tiles.every(t => {{
              const v = t.querySelector('video');
              return v.videoWidth > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 5; }});
        }})()""",
    )


def remote_frames(page: Any) -> list[int]:
    return list(
        page.evaluate(
            "[...document.querySelectorAll('.tile.remote video')]"
            ".map(v => v.getVideoPlaybackQuality().totalVideoFrames)"
        )
    )


def main(out: Path) -> dict[str, Any]:
    server = ServerThread()
    root = f"http://127.0.0.1:{server.port}/"
    result: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS
        )
        # 1. the README's words: open / in two tabs, press the button in both
        first = open_page(browser, root, "first")
        first.click("#start")
        wait_state(first, "waiting for someone to join")
        second = open_page(browser, root, "second")
        second.click("#start")
        wait_peers(first, 1)
        wait_peers(second, 1)
        result["two_tabs_connected"] = True
        # the page asks for nothing the server does not have (a favicon, say)
        result["failed_requests"] = list(FAILED)
        result["favicon_requested"] = any("favicon" in url for url in REQUESTED)
        result["default_session"] = first.evaluate("window.demo.session")
        result["link"] = first.inner_text("#link")

        # 2. a third tab makes it a group call: everyone sees everyone
        third = open_page(browser, root, "third")
        third.click("#start")
        for page in (first, second, third):
            wait_peers(page, 2)
        result["three_party_frames"] = [remote_frames(page) for page in (first, second, third)]
        result["pair"] = first.inner_text(".tile.remote .pair")
        out.mkdir(parents=True, exist_ok=True)
        first.screenshot(path=str(out / "demo-call.png"))
        result["screenshot"] = str(out / "demo-call.png")

        # 3. the third hangs up: the other two stay in their call; the third can rejoin
        third.click("#hangup")
        wait_state(third, "hung up")
        wait_peers(first, 1)
        wait_peers(second, 1)
        before = remote_frames(first)[0]
        wait_for(
            first,
            f"document.querySelector('.tile.remote video')"
            f".getVideoPlaybackQuality().totalVideoFrames > {before + 10}",
        )
        result["after_hangup"] = {
            "tiles": [len(remote_frames(page)) for page in (first, second)],
            "states": [page.evaluate("document.body.dataset.state") for page in (first, second)],
            "start_enabled": third.is_enabled("#start"),
        }
        third.click("#start")
        for page in (first, second, third):
            wait_peers(page, 2)
        result["rejoined_three"] = True

        # 4. errors are shown: a user id the server refuses, a second tab of the same user
        long_user = open_page(browser, root + "?user=" + "u" * 200, "long")
        long_user.click("#start")
        wait_for(
            long_user,
            "document.body.dataset.error !== undefined && document.body.dataset.error !== ''",
        )
        result["long_user_error"] = long_user.inner_text("#error")
        result["long_user_start_enabled"] = long_user.is_enabled("#start")
        long_user.close()
        third_user = third.evaluate("window.demo.userId")
        twin = open_page(browser, root + "?user=" + third_user, "twin")
        twin.click("#start")
        wait_for(third, "(document.body.dataset.error || '').includes('another tab')")
        result["replaced_error"] = third.inner_text("#error")
        result["replaced_start_enabled"] = third.is_enabled("#start")
        # the twin took the seat: the others call it afresh
        for page in (first, second, twin):
            wait_peers(page, 2)
        result["twin_in_call"] = True
        for page in (twin, third):
            page.close()
        wait_peers(first, 1)
        wait_peers(second, 1)

        # 5. resume (protocol/SPEC.md §10): first's signaling connection is cut
        # during the call, by a node draining (1001) and then by the network
        # (no close frame). Each time it resumes: the call stays connected on the
        # same RTCPeerConnection, video keeps coming, second hears nothing.
        alice, bob = first, second
        alice_id = alice.evaluate("window.demo.userId")
        bob_id = bob.evaluate("window.demo.userId")
        alice.evaluate(
            """(peer) => {
              const client = window.demo.client;
              window.probe = { resumed: 0, rejoined: 0, shown: [], states: [],
                               call: window.demo.calls.get(peer) };
              client.addEventListener("reconnecting", () =>
                window.probe.shown.push(document.querySelector("#state").textContent));
              client.addEventListener("resumed", () => { window.probe.resumed += 1; });
              client.addEventListener("rejoined", () => { window.probe.rejoined += 1; });
              window.probe.call.addEventListener(
                "state", (e) => window.probe.states.push(e.detail));
            }""",
            bob_id,
        )
        bob.evaluate(
            """() => { window.membership = [];
              for (const type of ["user-left", "user-joined"])
                window.demo.client.addEventListener(type, (e) => window.membership.push(type)); }"""
        )
        connection_id = alice.evaluate("window.demo.client.connectionId")

        def alice_connection() -> Any:
            (connection,) = [c for c in server.hub.connections if c.user_id == alice_id]
            return connection

        def drain_alice() -> None:
            alice_connection().close(1001, "node restarting (test)")

        def cut_alice() -> None:
            # no close frame: the socket just goes, as when the network does
            transport = alice_connection().transport
            transport.stream.socket.shutdown(2)

        resumes = []
        for n, cut in enumerate((drain_alice, cut_alice), start=1):
            before = remote_frames(alice)[0]
            server.run_sync(cut)
            wait_for(alice, f"window.probe.resumed === {n}")
            wait_for(
                alice,
                f"document.querySelector('.tile.remote video')"
                f".getVideoPlaybackQuality().totalVideoFrames > {before + 10}",
            )
            resumes.append(
                alice.evaluate(
                    """(id) => ({
                      sameConnectionId: window.demo.client.connectionId === id,
                      sameCall: window.demo.calls.get(window.probe.call.peer) === window.probe.call,
                      connectionState: window.probe.call.pc.connectionState,
                      state: document.body.dataset.state })""",
                    connection_id,
                )
            )
        result["resumes"] = resumes
        result["resume_shown"] = alice.evaluate("window.probe.shown")
        result["resume_call_states"] = alice.evaluate("window.probe.states")
        result["resume_rejoined"] = alice.evaluate("window.probe.rejoined")
        result["resume_bob_heard"] = bob.evaluate("window.membership")
        # signaling works through the resumed connection: an ICE restart completes
        negotiations = alice.evaluate("window.probe.call.negotiations")
        alice.evaluate("window.probe.call.pc.restartIce()")
        wait_for(
            alice,
            f"""(() => {{ const pc = window.probe.call.pc;
              return window.probe.call.negotiations > {negotiations}
                && pc.signalingState === 'stable'
                && ['connected', 'completed'].includes(pc.iceConnectionState); }})()""",
        )
        before = remote_frames(alice)[0]
        wait_for(
            alice,
            f"document.querySelector('.tile.remote video')"
            f".getVideoPlaybackQuality().totalVideoFrames > {before + 10}",
        )
        result["ice_restart_after_resume"] = True

        # too late to resume (the window ended at once here): it rejoins, and the
        # two call each other afresh
        def drop_alice_for_good() -> None:
            drain_alice()
            server.hub.end_resumes()

        server.run_sync(drop_alice_for_good)
        wait_for(alice, "window.probe.rejoined === 1")
        wait_peers(alice, 1)
        wait_peers(bob, 1)
        result["rejoined_connection_changed"] = (
            alice.evaluate("window.demo.client.connectionId") != connection_id
        )
        result["rejoined"] = server.run_sync(
            lambda: sorted(server.hub.registry.participants("demo"))
        ) == sorted([alice_id, bob_id])
        bob.close()

        # 6. the Python SDK on one side, the browser on the other, signaling only
        async def python_side() -> dict[str, Any]:
            async with connect(f"ws://127.0.0.1:{server.port}/ws", user_id="carol") as carol:
                await carol.join("mixed")
                with trio.fail_after(30):
                    while True:
                        frame = await carol.receive()
                        if isinstance(frame, RelayedOffer):
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

        # 7. the browser client against a server that is down (port 9: refused)
        probe = browser.new_context().new_page()
        probe.goto(root)
        result["down"] = probe.evaluate(
            """async () => {
              const { SignalingClient } = await import("/client.js");
              let sockets = 0;
              const Original = window.WebSocket;
              window.WebSocket = class extends Original {
                constructor(...args) { super(...args); sockets += 1; }
              };
              const url = "ws://127.0.0.1:9/ws";
              const client = new SignalingClient(url, { userId: "x", minDelay: 10, maxDelay: 10 });
              const error = await client.connect().catch((e) => e);
              // a retry would open a socket within 10 ms: give it thirty times that
              await new Promise((resolve) => setTimeout(resolve, 300));
              const once = sockets;
              const retrying = new SignalingClient(url,
                { userId: "y", minDelay: 10, maxDelay: 10 });
              let attempts = 0;
              const thrice = new Promise((resolve) => retrying.addEventListener("reconnecting",
                (e) => { attempts = e.detail.attempt; if (attempts >= 3) resolve(); }));
              const pending = retrying.connect({ retry: true }).catch((e) => e);
              await thrice;
              retrying.close();
              const retryError = await pending;
              window.WebSocket = Original;
              return { name: error.name, code: error.code, closeCode: error.closeCode,
                       message: error.message, sockets: once, retryAttempts: attempts,
                       retryCode: retryError.code };
            }"""
        )
        rolling_restart(browser, result)
        browser.close()
    server.stop()
    return result


def rolling_restart(browser: Any, result: dict[str, Any]) -> None:
    """8. Two nodes and a Redis behind nginx (docs/deployment.md's block), a call
    between two pages; the node that holds their connections is restarted, then
    the other one. Each time both pages resume on the node still up: the call
    stays connected on the same RTCPeerConnection and nobody hears a thing."""
    import shutil
    import signal
    import tempfile

    from tests.conftest import redis_argv
    from tests.test_cli import free_port
    from tests.test_sticky import nginx_config

    def wait_listening(port: int) -> None:
        for _ in range(100):  # a server started a moment ago
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)

    folder = Path(tempfile.mkdtemp())
    redis_port, nginx_port = free_port(), free_port()
    redis = subprocess.Popen(redis_argv(redis_port, folder), stdout=subprocess.DEVNULL)
    ports = [free_port(), free_port()]
    settings = [
        Settings(
            host="127.0.0.1",
            port=port,
            rate_limit=0,
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            graceful_timeout=10,
        )
        for port in ports
    ]
    (folder / "nginx.conf").write_text(nginx_config(nginx_port, ports, folder))
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin") or "nginx"
    proxy = None
    nodes: list[ServerThread] = []
    try:
        wait_listening(redis_port)
        nodes = [ServerThread(settings[0]), ServerThread(settings[1])]
        proxy = subprocess.Popen(
            [nginx, "-c", str(folder / "nginx.conf"), "-p", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(nginx_port)
        url = f"http://127.0.0.1:{nginx_port}/?session=rolling"
        alice = open_page(browser, url + "&user=ann", "ann")
        bob = open_page(browser, url + "&user=ben", "ben")
        alice.click("#start")
        wait_state(alice, "waiting for someone to join")
        bob.click("#start")
        wait_peers(alice, 1)
        wait_peers(bob, 1)
        for page, peer in ((alice, "ben"), (bob, "ann")):
            page.evaluate(
                """(peer) => {
                  window.probe = { resumed: 0, rejoined: 0, heard: [],
                                   call: window.demo.calls.get(peer) };
                  const client = window.demo.client;
                  client.addEventListener("resumed", () => { window.probe.resumed += 1; });
                  client.addEventListener("rejoined", () => { window.probe.rejoined += 1; });
                  for (const type of ["user-left", "user-joined"])
                    client.addEventListener(type, () => window.probe.heard.push(type));
                }""",
                peer,
            )
        restarts = []
        for n in (1, 2):
            holder = next(
                i
                for i, node in enumerate(nodes)
                if node.run_sync(lambda node=node: len(node.hub.connections))
            )
            before = [remote_frames(page)[0] for page in (alice, bob)]
            nodes[holder].stop()  # SIGTERM's path: 1001, then wait for the resumes
            for page in (alice, bob):
                wait_for(page, f"window.probe.resumed === {n}")
            nodes[holder] = ServerThread(settings[holder])  # back, on the same port
            for page, frames in zip((alice, bob), before, strict=True):
                wait_for(
                    page,
                    f"document.querySelector('.tile.remote video')"
                    f".getVideoPlaybackQuality().totalVideoFrames > {frames + 10}",
                )
            restarts.append(
                [
                    page.evaluate(
                        """() => ({ sameCall: window.demo.calls.get(window.probe.call.peer)
                                      === window.probe.call,
                                    connectionState: window.probe.call.pc.connectionState,
                                    rejoined: window.probe.rejoined, heard: window.probe.heard })"""
                    )
                    for page in (alice, bob)
                ]
            )
        result["rolling_restarts"] = restarts
        for page in (alice, bob):
            page.close()
    finally:
        if proxy is not None:
            proxy.send_signal(signal.SIGQUIT)
            proxy.wait(timeout=10)
        for node in nodes:
            node.stop()
        redis.kill()
        redis.wait()


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    print(json.dumps(main(Path(sys.argv[1]))))
