"""The documentation as a newcomer uses it: links resolve, and the commands run as written.

README.md and bench/README.md: every ``sh`` and ``python`` block is run here
exactly as written (a server the README starts with ``./dev serve`` on its
port), unless `NOT_RUN` says why it cannot be; a Python block's ``# ...``
comments after ``print(...)`` are its expected output.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_cli import clean_env

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)

# blocks of README.md / bench/README.md that are not run here, by their first line
NOT_RUN = {
    # run by CI itself (`./dev test` is this suite) and by the `readme_server` fixture
    "./dev serve    # the server on port 3001: in-memory sessions, development auth": "",
    # py-spy comes from PyPI, and tests reach nothing beyond this machine
    ".venv/bin/signaling serve --port 3555 --max-connections-per-ip 0 &": "",
}


def blocks(path: Path) -> list[tuple[str, str]]:
    """(language, text) of each fenced code block."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(path.read_text())]


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


def _links(path: Path) -> Iterator[tuple[str, str]]:
    text = BLOCK.sub("", path.read_text())
    for match in re.finditer(r"\]\(([^)\s]+)\)", text):
        yield path.name, match.group(1)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    for _, target in _links(path):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{path.name}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            headings = re.findall(r"(?m)^#+ (.+)$", BLOCK.sub("", linked.read_text()))
            assert anchor in {_anchor(h) for h in headings}, f"{path.name}: no #{anchor}"


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 120
    language, first = blocks(ROOT / "README.md")[0]
    assert language == "sh"
    assert [line.split("#")[0].strip() for line in first.splitlines()] == [
        "./dev serve",
        "./dev test",
    ]


def test_every_module_is_in_the_development_guide() -> None:
    guide = (ROOT / "docs" / "development.md").read_text()
    for module in sorted((ROOT / "signaling").rglob("*.py")):
        relative = module.relative_to(ROOT / "signaling")
        if relative == Path("__init__.py"):
            continue
        # a package by its folder, a module by its file name
        name = f"{relative.parent.name}/" if relative.name == "__init__.py" else relative.name
        assert f"`{name}`" in guide, f"docs/development.md does not mention {relative}"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def readme_server() -> Iterator[None]:
    """``./dev serve``, exactly as the README's first block says, on its port 3001."""
    assert _port_free(3001), "port 3001 is taken: the README's commands need it"
    process = subprocess.Popen(
        ["./dev", "serve"],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # bounded by the process: it ends if serve fails
        seen.append(line)
        if "listening on" in line:
            break
    else:
        raise AssertionError("./dev serve did not start: " + "".join(seen))
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()


def _readme_blocks() -> list[tuple[str, str, str]]:
    found = []
    for path in (ROOT / "README.md", ROOT / "bench" / "README.md"):
        for language, text in blocks(path):
            if language in ("sh", "python"):
                found.append((path.relative_to(ROOT).as_posix(), language, text))
    return found


def _first_line(text: str) -> str:
    return text.splitlines()[0].strip()


@pytest.mark.parametrize(
    ("where", "language", "text"),
    [b for b in _readme_blocks() if _first_line(b[2]) not in NOT_RUN],
    ids=lambda value: value if value in ("README.md", "bench/README.md") else "",
)
def test_the_readmes_commands_run_as_written(
    where: str, language: str, text: str, readme_server: None, tmp_path: Path
) -> None:
    if language == "python":
        header = _first_line(text)
        match = re.fullmatch(r"# save as (\S+), run with: (.+)", header)
        assert match, f"a Python block says how to run it: {header!r}"
        (tmp_path / match.group(1)).write_text(text)
        command = match.group(2).replace(".venv/bin/python", sys.executable)
        result = subprocess.run(
            command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        expected = [
            line.split("# ", 1)[1].strip()
            for line in text.splitlines()
            if line.strip().startswith("print(") and "# " in line
        ]
        assert result.stdout.splitlines() == expected
        return
    for line in text.splitlines():
        command = line.split("  #")[0].strip()
        if not command or command.startswith("#"):
            continue
        result = subprocess.run(
            command,
            shell=True,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=clean_env(),
        )
        assert result.returncode == 0, f"{where}: {command}\n{result.stdout}\n{result.stderr}"
        if command.startswith("curl"):
            assert '"status":"ok"' in result.stdout.replace(" ", ""), result.stdout
        if "loadgen.py" in command:
            report = json.loads(result.stdout.strip().splitlines()[-1])
            assert report["scenario"] in command, report


def test_the_blocks_not_run_are_still_there() -> None:
    """`NOT_RUN` names real blocks (a renamed block must not slip out of the test)."""
    firsts = {_first_line(text) for _, _, text in _readme_blocks()}
    assert set(NOT_RUN) <= firsts


def test_the_code_points_at_the_spec_by_section() -> None:
    """References to the protocol name ``protocol/SPEC.md §n`` (a section that
    exists), never the shared contract's file, which is not in this repository."""
    sections = set(re.findall(r"(?m)^## (\d+)\. ", (ROOT / "protocol" / "SPEC.md").read_text()))
    for path in [*(ROOT / "signaling").rglob("*.py"), *(ROOT / "tests").glob("*.py")]:
        text = path.read_text()
        assert "PROTOCOL" + ".md" not in text, path
        for number in re.findall(r"SPEC\.md §(\d+)", text):
            assert number in sections, f"{path}: SPEC.md §{number}"


def test_references_in_docstrings_name_what_exists() -> None:
    """```signaling.x.y``` in a docstring or comment names a module and what is in
    it (an instance attribute may end it): none left behind by a move."""
    import importlib

    stale = []
    for path in (ROOT / "signaling").rglob("*.py"):
        for ref in re.findall(r"`(signaling(?:\.[A-Za-z_]\w*)+)`", path.read_text()):
            if ref.startswith("signaling.v1."):  # subprotocol names, not modules
                continue
            parts = ref.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    found: object = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                break
            else:
                stale.append(ref)
                continue
            rest = parts[cut:]
            for index, attr in enumerate(rest):
                if hasattr(found, attr):
                    found = getattr(found, attr)
                elif not (index == len(rest) - 1 and isinstance(found, type)):
                    stale.append(f"{path.name}: {ref}")
                    break
    assert stale == []
