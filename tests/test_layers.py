"""The import direction: each layer imports only the layers below it, and no
module imports itself back through others. Type-only imports (under
``TYPE_CHECKING``) and imports inside functions count the same as any other.

Layers, from the bottom:

0. the protocol: frames, codecs, errors (and the schema writer);
1. the core: the rules, sans I/O;
2. the server's seams: settings, logs, counters, the WebSocket codec, the
   `Transport` seam, the connection, the cluster, the node (`Hub`);
3. the transports: one module per way in;
4. what puts it together and runs it: the app, the front door, ``serve``,
   the workers, the CLI, and the SDK.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "signaling"

LAYERS: dict[str, int] = {
    "signaling.frames": 0,
    "signaling.codec": 0,
    "signaling.errors": 0,
    "signaling.schema": 0,
    "signaling.core": 1,
    "signaling.server.transports.base": 2,
    "signaling.server.transports": 3,
    "signaling.server.app": 4,
    "signaling.server.front": 4,
    "signaling.server.serve": 4,
    "signaling.server.workers": 4,
    "signaling.server.hypercorn_config": 4,
    "signaling.server": 2,  # every other server module is a seam
    "signaling.cli": 4,
    "signaling.__main__": 4,
    "signaling.client": 4,
}
PACKAGES = {"signaling": 0, "signaling.server": 4}
"""A package's own ``__init__`` re-exports from above it; it is its layer's face."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    if module in PACKAGES:
        return PACKAGES[module]
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add it to LAYERS")


def imports(path: Path) -> set[str]:
    """Every module of ours ``path`` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("signaling")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("signaling"):
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                known = {module_name(p) for p in PACKAGE.rglob("*.py")}
                found.add(candidate if candidate in known else target)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_imports_only_from_its_layer_or_below() -> None:
    wrong = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if layer(target) > layer(module) and target not in PACKAGES
    ]
    assert wrong == []


def test_no_import_cycles() -> None:
    edges = graph()
    # a package's __init__ re-exports its children; its children never need it
    for package in PACKAGES:
        edges[package] = set()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert cycles == []


def test_the_transport_seam_and_the_counters_import_nothing_of_the_server() -> None:
    assert imports(PACKAGE / "server" / "stats.py") == set()
    assert imports(PACKAGE / "server" / "transports" / "base.py") <= {"signaling.server.outbox"}
    assert "signaling.server.hub" not in imports(PACKAGE / "server" / "metrics.py")
    assert "signaling.server.hub" not in imports(PACKAGE / "server" / "connection.py")
    assert "signaling.server.hub" not in imports(PACKAGE / "server" / "cluster.py")


EXTENSION_POINTS = {
    # public for whoever builds a Hub with their own identity seams or ICE servers
    "signaling.server.auth": {
        "AllowAll",
        "DevelopmentAuthenticator",
        "HmacVerifier",
        "TokenSessions",
        "Verifier",
        "WebhookAuthorizer",
    },
    "signaling.server.ice": {"RestTurn", "StaticIceServers"},
    "signaling.server.config": {"Setting"},
}


def test_server_modules_export_only_what_others_use() -> None:
    """A server module's ``__all__`` is what other modules (or the tests) import of
    it, plus its extension points: nothing kept public by accident."""
    sources = {
        path: path.read_text()
        for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
        if "node_modules" not in path.parts
    }
    unused = []
    for path in sorted((PACKAGE / "server").rglob("*.py")):
        tree = ast.parse(sources[path])
        exported: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
            ):
                exported = list(ast.literal_eval(node.value))
        name = module_name(path)
        for symbol in exported:
            if symbol in EXTENSION_POINTS.get(name, set()):
                continue
            pattern = re.compile(rf"\b{re.escape(symbol)}\b")
            if not any(pattern.search(text) for other, text in sources.items() if other != path):
                unused.append(f"{name}.{symbol}")
    assert unused == []
