"""docs/CONFIG.md lists every config section and key with its default and the comment written
beside it in advtrain/config/ (the one place keys are defined); ``advtrain train --help``
points there. ``python tests/config/test_config_doc.py docs/CONFIG.md`` regenerates it."""
from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "advtrain" / "config" / "__init__.py"


def _comments(lines, node) -> str:
    """The comment lines just above a field and the comment after it on its line."""
    above, i = [], node.lineno - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        above.insert(0, lines[i].strip().lstrip("#").strip())
        i -= 1
    line = lines[node.lineno - 1]
    inline = line.split("  # ", 1)[1].strip() if "  # " in line else ""
    return " ".join(x for x in (*above, inline) if x)


def _default(f) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(section)"
    return "null" if value is None else repr(value).replace("|", "\\|")


def generate() -> str:
    import advtrain.config as C

    import inspect

    def rows(cls):
        source = Path(inspect.getsourcefile(cls)).read_text()  # a section may live in its own file
        lines = source.splitlines()
        node = next(n for n in ast.parse(source).body
                    if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
        notes = {n.target.id: _comments(lines, n) for n in node.body
                 if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
        return [(f, notes.get(f.name, "")) for f in dataclasses.fields(cls)]

    out = ["# Config keys", "",
           "Generated from `advtrain/config/` by `python tests/config/test_config_doc.py "
           "docs/CONFIG.md` (a test keeps it in sync). A YAML config has these sections; a key left "
           "out takes the default shown. `attack:` and `optim:` entries left out are the objective's "
           "own recipe (`advtrain/objectives/<name>.py`, `ATTACK` / `OPTIM`), and `objective:` takes "
           "`name:` plus that objective's options (documented in its file). Examples: `configs/`.",
           "", "## top level", "", "| key | default | meaning |", "|---|---|---|"]
    sections = []
    for f, note in rows(C.Config):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            sections.append((f.name, type(default)))
        out.append(f"| `{f.name}` | {_default(f)} | {note.replace('|', '/')} |")
    for name, cls in sections:
        out += ["", f"## {name}", ""]
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            out += [" ".join(cls.__doc__.split()), ""]
        out += ["| key | default | meaning |", "|---|---|---|"]
        for f, note in rows(cls):
            out.append(f"| `{name}.{f.name}` | {_default(f)} | {note.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def test_config_doc_is_current():
    assert (REPO / "docs" / "CONFIG.md").read_text() == generate(), (
        "docs/CONFIG.md is stale: python tests/config/test_config_doc.py docs/CONFIG.md")


def test_every_key_is_in_the_doc():
    import advtrain.config as C

    doc = (REPO / "docs" / "CONFIG.md").read_text()
    for f in dataclasses.fields(C.Config):
        assert f"`{f.name}`" in doc
    for f in dataclasses.fields(C.DataConfig):
        assert f"`data.{f.name}`" in doc


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    Path(sys.argv[1]).write_text(generate())
