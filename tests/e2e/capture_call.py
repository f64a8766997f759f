"""Capture a real Chromium call's offer, answer and ICE candidates as a test fixture.

Run inside a network namespace that has only the loopback interface, so the
candidates are host candidates on 127.0.0.1 and nothing leaves the machine::

    unshare -n -- .venv/bin/python tests/e2e/capture_call.py tests/fixtures/chromium-call.json

Headless Chromium (Debian's, fake camera and microphone) opens our demo page's
origin (a secure context for getUserMedia) and sets up an audio+video call
between two RTCPeerConnections of that page: it records the offer, the answer
and every trickled candidate as ``RTCIceCandidate.toJSON()`` (what a browser
sends), ``null`` for end-of-candidates, and checks that the call connected.
tests/test_fixtures.py checks the result's shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser_call import CHROMIUM_FLAGS, ServerThread  # type: ignore[import-not-found]

CALL_SCRIPT = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  const caller = new RTCPeerConnection();
  const callee = new RTCPeerConnection();
  const offerCandidates = [];
  const answerCandidates = [];
  const gathered = (pc, list) => new Promise((resolve) => {
    pc.onicecandidate = (e) => {
      list.push(e.candidate ? e.candidate.toJSON() : null);
      if (!e.candidate) resolve();
    };
  });
  const callerDone = gathered(caller, offerCandidates);
  const calleeDone = gathered(callee, answerCandidates);
  for (const track of stream.getTracks()) caller.addTrack(track, stream);
  callee.ontrack = () => {};
  const offer = await caller.createOffer();
  await caller.setLocalDescription(offer);
  await callee.setRemoteDescription(offer);
  for (const track of stream.getTracks()) callee.addTrack(track.clone(), stream);
  const answer = await callee.createAnswer();
  await callee.setLocalDescription(answer);
  await caller.setRemoteDescription(answer);
  await Promise.all([callerDone, calleeDone]);
  // trickled after gathering ends, so the other side's checks cannot cut gathering short
  for (const c of offerCandidates) await callee.addIceCandidate(c ?? undefined);
  for (const c of answerCandidates) await caller.addIceCandidate(c ?? undefined);
  const connected = new Promise((resolve) => {
    const check = () => caller.connectionState === "connected" && resolve();
    caller.onconnectionstatechange = check;
    check();
  });
  await connected;
  return {
    offer: { type: offer.type, sdp: offer.sdp },
    answer: { type: answer.type, sdp: answer.sdp },
    offerCandidates,
    answerCandidates,
    userAgent: navigator.userAgent,
  };
}
"""


def capture() -> dict[str, Any]:
    """One call between two peer connections of one headless Chromium page."""
    server = ServerThread()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS
            )
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.port}/")
            call: dict[str, Any] = page.evaluate(CALL_SCRIPT)
            browser.close()
    finally:
        server.stop()
    return call


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result = capture()
    Path(sys.argv[1]).write_text(json.dumps(result, indent=2) + "\n")
    print(f"captured {result['userAgent']}: {len(result['offer']['sdp'])} bytes of offer SDP")
