"""The import graph of advtrain/ and attacks/: no circle, attacks/ imports nothing from advtrain, and
no package imports one above it in the order docs/DESIGN.md gives (``LAYERS`` below).

Imports are read with ``ast`` (module level and inside functions, absolute and relative), so a lazy
import inside a function counts as much as one at the top: it is still a dependency. A string that
names a project module (``importlib.import_module("advtrain.x")``, a lazy table) counts too, and an
f-string such as ``f"advtrain.cli.{name}_cmd"`` counts as an import of every module it can name.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
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
            # "from pkg import sub" imports the submodule when there is one, else pkg itself;
            # "from advtrain import __version__" reads a constant, not the API the package exposes
            targets = [f"{stem}.{a.name}" for a in node.names if not a.name.startswith("__")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value \
                and node.value in known:
            targets = [node.value]  # a module named in a string: importlib, a lazy table
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            prefix = str(node.values[0].value)  # f"advtrain.cli.{name}_cmd": every module it can name
            targets = [m for m in known if prefix.count(".") and m.startswith(prefix)] if "." in prefix else []
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
    assert "advtrain.models" in g["advtrain.hub.loader"]  # absolute, inside a function
    assert any(m.startswith("attacks") for m in g["advtrain.eval.evaluator"])  # inside a function


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


# The package order, bottom first (docs/DESIGN.md, "Which way imports run"). A module may import
# its own layer and the layers below it, never one above.
LAYERS = (
    ("attacks", "the standalone attack library"),
    ("core", "advtrain.errors, utils, distributed, losses"),
    ("advtrain.io", "safe loading, atomic writes, names that become files"),
    ("advtrain.data", "datasets and the table of dataset facts"),
    ("advtrain.models", "architectures"),
    ("advtrain.hub", "model files: the one loader, the RobustBench zoo, export"),
    ("advtrain.eval", "evaluation, cards, report"),
    ("advtrain.objectives", "training objectives"),
    ("advtrain.config", "the one resolved config, its checks, schedules"),
    ("advtrain.train", "the training loop and its parts"),
    ("api", "advtrain/__init__: advtrain.fit, evaluate, create_model"),
    ("advtrain.cli", "the command line"),
    ("advtrain.__main__", "python -m advtrain"),
)
CORE = {"advtrain.errors", "advtrain.utils", "advtrain.distributed", "advtrain.losses"}


def layer_of(module: str) -> int:
    names = [n for n, _ in LAYERS]
    if module == "advtrain":
        return names.index("api")
    if module in CORE:
        return names.index("core")
    for i, name in sorted(enumerate(names), key=lambda x: -len(x[1])):
        if module == name or module.startswith(name + "."):
            return i
    raise AssertionError(f"{module} belongs to no layer of LAYERS: give it a package")


def back_edges(g: dict) -> list:
    return sorted(f"{a} -> {b}" for a, deps in g.items() for b in deps if layer_of(b) > layer_of(a))


def test_every_module_has_a_layer():
    for name in graph():
        layer_of(name)


def test_no_package_imports_a_higher_one():
    bad = back_edges(graph())
    assert not bad, "imports against the package order (tests/core/test_imports.py LAYERS): " + "; ".join(bad)


def test_back_edge_detection_sees_a_planted_edge_and_importlib():
    g = graph()
    assert any(m.startswith("advtrain.cli.") and m.endswith("_cmd") for m in g["advtrain.cli"])  # f-string
    assert "advtrain.train.loop" in g["advtrain"]  # the lazy table's strings
    planted = dict(g, **{"advtrain.io.atomic": g["advtrain.io.atomic"] | {"advtrain.train.loop"}})
    assert back_edges(planted) == sorted(back_edges(g) + ["advtrain.io.atomic -> advtrain.train.loop"])


def test_top_level_holds_few_modules():
    top = sorted(p.stem for p in (REPO / "advtrain").glob("*.py"))
    assert len([m for m in top if m not in ("__init__", "__main__")]) <= 8, top
