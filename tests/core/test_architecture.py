"""Who imports what is the architecture: no import cycle between clsweep's modules or packages,
and the layers that must stay light (the spec layer, the CL core) import nothing heavy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "clsweep"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only: no import at run time)."""
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        if (
            isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
        ):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path, name: str) -> set[str]:
    """Every clsweep module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from clsweep import registry` imports the module clsweep.registry; `from clsweep.x import
            # name` imports clsweep.x
            subs = {f"{base}.{a.name}" for a in node.names}
            modules = {
                m
                for m in subs
                if (ROOT.parent / m.replace(".", "/")).with_suffix(".py").exists()
                or (ROOT.parent / m.replace(".", "/") / "__init__.py").exists()
            }
            found.update(modules)
            if modules != subs:
                found.add(base)
    return {m for m in found if m == "clsweep" or m.startswith("clsweep.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, name) if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _package(module: str) -> str:
    """``clsweep.sweep.driver`` -> ``clsweep.sweep``; a top-level module (``clsweep.registry``) is
    a node of its own."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_modules():
    graph = _graph()
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for name, targets in _graph().items():
        mine = _package(name)
        packages.setdefault(mine, set()).update(_package(t) for t in targets if _package(t) != mine)
    cycle = _cycle(packages)
    assert cycle is None, f"packages import each other: {' -> '.join(cycle or [])}"


def test_the_graph_walker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "layer", ["clsweep.spec", "clsweep.common", "clsweep.registry", "clsweep.recovery", "clsweep.storage"]
)
def test_light_layers_import_neither_torch_nor_ray(layer):
    heavy = ("torch", "ray", "mlflow", "lightning", "optuna")
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        if name != layer and not name.startswith(layer + "."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not [n for n in names if n.split(".")[0] in heavy], f"{name} imports {names}"
