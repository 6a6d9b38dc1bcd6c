"""The import graph of advtrain/ and attacks/: no circle, and attacks/ imports nothing from advtrain.

Imports are read with ``ast`` (module level and inside functions, absolute and relative), so a lazy
import inside a function counts as much as one at the top: it is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("advtrain", "attacks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict:
    """``{module name: path}`` of every .py file in the packages."""
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _resolve(target: str, known) -> str | None:
    """The project module ``target`` names (a submodule, or the package holding an attribute)."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def imports_of(name: str, path: Path, known) -> set:
    """Project modules imported anywhere in ``path`` (``name`` is its module name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from pkg import sub" imports the submodule when there is one
            targets = [f"{stem}.{a.name}" for a in node.names] + [stem]
        else:
            continue
        for target in targets:
            mod = _resolve(target, known)
            if mod is not None and mod != name:
                found.add(mod)
    return found


def graph() -> dict:
    mods = _modules()
    return {name: imports_of(name, path, mods) for name, path in mods.items()}


def circles(g: dict) -> list:
    """Every strongly connected component of more than one module (Tarjan), sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_graph_sees_lazy_and_relative_imports():
    g = graph()
    assert "attacks.base" in g["attacks.pgd"]  # relative, module level
    assert "advtrain.models" in g["advtrain.modelfile"]  # absolute, inside a function
    assert any(m.startswith("attacks") for m in g["advtrain.evaluation"])  # inside a function


def test_circle_detection_finds_a_planted_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(g) == [["a", "b", "c"]]


def test_no_import_circle_among_project_modules():
    found = circles(graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("name", sorted(m for m in _modules() if m.split(".")[0] == "attacks"))
def test_attacks_import_nothing_from_advtrain(name):
    bad = sorted(m for m in graph()[name] if m.split(".")[0] == "advtrain")
    assert not bad, f"{name} imports {bad}; attacks/ must stand alone"
