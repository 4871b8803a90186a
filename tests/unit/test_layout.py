"""The package's shape: no import circles, imports only downward (DESIGN.md's floors),
modules readable in one sitting, a dispatcher that fits on a screen, and the SLURM
templates that ship inside the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "ssl" / "selfsup"

#: DESIGN.md's floors; a module imports only from floors below its own (or its own package).
#: errors is the ground every floor stands on; cli, the dispatcher, sits on top.
FLOORS = {
    "errors": 0, "backbones": 1, "transforms": 1, "schedules": 1, "distributed": 1, "optimizers": 1,
    "precision": 1, "run_directory": 1,
    "data": 2, "checkpoints": 2, "losses": 2, "heads": 2, "masks": 2, "block_masks": 2, "knn": 2,
    "methods": 3,
    "train": 4, "eval": 4, "viz": 4,
    "commands": 5, "cli": 6,
}  # fmt: skip
#: Same-floor imports that are part of the design, with the reason.
ALLOWED = {
    ("train", "viz"): "the picture callback draws what `selfsup attention` draws",
    ("eval", "viz"): "segment scores the attention maps `selfsup attention` draws",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """selfsup modules a file imports anywhere (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("selfsup")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("selfsup"):
            for alias in node.names:  # `from selfsup.x import y` may name the module x.y
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES and m != "selfsup"}


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def test_no_import_circles():
    """Depth-first search for a cycle; a package importing its own submodules (re-exports in
    ``__init__``) is not a circle unless a submodule imports the package back."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def test_circle_detection_finds_a_planted_circle(monkeypatch):
    monkeypatch.setitem(GRAPH, "selfsup.errors", {"selfsup.cli"})
    with pytest.raises(pytest.fail.Exception, match="import circle"):
        test_no_import_circles()


def floor(module: str) -> tuple[int, str]:
    top = module.split(".")[1]
    return FLOORS[top], top


def test_every_module_has_a_floor():
    assert {floor(m)[1] for m in MODULES if m != "selfsup"} <= set(FLOORS)


def test_imports_go_down_the_floors():
    wrong = []
    for module, targets in GRAPH.items():
        if module == "selfsup":
            continue
        (mine, package) = floor(module)
        for target in targets:
            (theirs, other) = floor(target)
            if other == package or theirs < mine or (package, other) in ALLOWED:
                continue
            wrong.append(f"{module} (floor {mine}) imports {target} (floor {theirs})")
    assert not wrong, "\n".join(wrong)


def test_modules_stay_readable():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"
    assert len((PACKAGE / "cli.py").read_text().splitlines()) < 150


def test_evaluators_never_import_a_method():
    for module, targets in GRAPH.items():
        if module.startswith(("selfsup.eval", "selfsup.viz", "selfsup.checkpoints")):
            assert not any(t.startswith("selfsup.methods") for t in targets), module
