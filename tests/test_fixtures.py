"""The repository stands alone: its fixtures are its own, nothing reads beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import chromium_call

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = ["../" + "shared", "shared/" + "fixtures", '"' + 'shared" /', "ROOT.parent"]
"""What a path out of the repository looks like (spelled in pieces so this file passes)."""


def test_the_chromium_call_is_a_real_capture() -> None:
    call = chromium_call()
    assert (call["offer"]["type"], call["answer"]["type"]) == ("offer", "answer")
    for description in (call["offer"], call["answer"]):
        assert description["sdp"].startswith("v=0\r\n")
        assert "m=audio" in description["sdp"]
        assert "m=video" in description["sdp"]
    for candidates in (call["offerCandidates"], call["answerCandidates"]):
        assert candidates[-1] is None  # end of candidates
        for candidate in candidates[:-1]:
            assert set(candidate) == {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"}
            assert " 127.0.0.1 " in candidate["candidate"]
        protocols = {c["candidate"].split()[2] for c in candidates[:-1]}
        assert protocols == {"udp", "tcp"}
    assert "HeadlessChrome" in call["userAgent"]


def _tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    return [ROOT / name.decode() for name in listed if name]


def test_nothing_in_the_repository_reads_outside_it() -> None:
    offenders = []
    for path in _tracked_files():
        if path.suffix not in {".py", ".mjs", ".js", ".sh", ".toml", ".md", ".json", ""}:
            continue
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(ROOT)}: {p}" for p in OUTSIDE if p in text]
    assert offenders == []


def test_a_fresh_clone_collects_every_test(tmp_path: Path) -> None:
    """What a user clones, with nothing beside it, collects the whole suite."""
    clone = tmp_path / "signaling"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=60)
    assert not (tmp_path / "shared").exists()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=clone,
        env={**os.environ, "PYTHONPATH": str(clone)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    collected = int(result.stdout.strip().splitlines()[-1].split()[0])
    assert collected > 300
