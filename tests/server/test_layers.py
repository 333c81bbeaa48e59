"""The server's folders are layers: imports run one way, and no module imports itself back in a circle.

Read from the source (every ``from .x import`` and ``import`` of the package), not from what happens to
be imported at run time: an import that is only for type checking still ties two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "ncompass_openai" / "server"
PACKAGE = "ncompass_openai.server"
# Each folder, and the folders it may import from (the top-level modules are everyone's).
ALLOWED: dict[str, set[str]] = {
    "http": {"api", "backends", "ledger", "protocol", "runtime", "engines"},
    "api": {"backends", "ledger", "protocol", "runtime", "engines"},
    "backends": {"runtime", "protocol", "engines"},
    "runtime": {"protocol", "engines"},
    "protocol": set(),
    "ledger": set(),
    "engines": set(),
}
TOP = {"_settings", "_exceptions", "_state", "__init__", "__main__"}
MAX_LINES = 400


def _module(path: Path) -> str:
    parts = path.relative_to(SERVER).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def _imports(path: Path) -> set[str]:
    """The server modules ``path`` imports (resolved to dotted names)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            found.update(n if (SERVER / _path(n)).exists() or _is_package(n) else target for n in names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith(PACKAGE + ".") or name == PACKAGE}


def _path(name: str) -> str:
    return "/".join(name.split(".")[2:]) + ".py"


def _is_package(name: str) -> bool:
    return (SERVER / "/".join(name.split(".")[2:]) / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    return {_module(path): _imports(path) for path in SERVER.rglob("*.py")}


def _layer(name: str) -> str:
    rest = name.split(".")[2:]
    return rest[0] if rest and rest[0] in ALLOWED else "top"


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert len(graph) > 60
    assert f"{PACKAGE}.backends" in graph[f"{PACKAGE}.api._serving"]
    assert f"{PACKAGE}.runtime._bridge" in graph[f"{PACKAGE}.api._serving"]


def test_no_import_runs_against_the_layers() -> None:
    wrong = []
    for module, targets in _graph().items():
        layer = _layer(module)
        for target in targets:
            other = _layer(target)
            if layer in ("top", other) or other == "top":
                continue
            if other not in ALLOWED[layer]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_import_circle() -> None:
    graph = _graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target not in graph or target == node:
                continue
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_no_module_is_over_400_lines() -> None:
    package = SERVER.parent
    lines = {str(p.relative_to(package)): len(p.read_text().splitlines()) for p in package.rglob("*.py")}
    long = {name: count for name, count in lines.items() if count > MAX_LINES}
    assert long == {}
