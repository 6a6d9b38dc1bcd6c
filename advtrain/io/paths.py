"""Checks of user-given paths at the CLI edge, before any work starts."""
from __future__ import annotations

import errno
import os
import re
from typing import Any, Mapping, Optional, Sequence, Tuple

from advtrain.errors import InputError

__all__ = ["check_outputs", "check_path", "check_writable_dir", "portable_path", "portable"]

#: how far above the card's folder a recorded path may climb and stay relative (model_info/<dataset>/
#: <threat model>/ -> the folder holding model_info); anything further is recorded by file name only
MAX_UP = 3
#: an absolute POSIX path inside a text (not the "//" of a URL, not the "/" of 8/255 or a/b)
_ABS = re.compile(r"(?<![\w:/.~-])/(?!/)[^\s'\"()\[\],;]+")


def portable_path(path: Any, base: Any) -> str:
    """``path`` as it may appear in a file sent to someone else: relative to ``base`` (a card's
    folder) when it lies at most :data:`MAX_UP` folders above it, else its file name alone.
    Nothing of the machine's absolute layout survives (a hash beside it identifies the file)."""
    path, base = os.path.abspath(os.fspath(path)), os.path.abspath(os.fspath(base))
    rel = os.path.relpath(path, base)
    parts = rel.split(os.sep)
    ups = len(parts) - len([p for p in parts if p != ".."])
    if ups <= MAX_UP and not os.path.isabs(rel):
        return rel
    return os.path.basename(path.rstrip(os.sep)) or "."


def portable(value: Any, base: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with every absolute path inside its strings
    rewritten by :func:`portable_path` against ``base`` (keys are left alone)."""
    if isinstance(value, dict):
        return {k: portable(v, base) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, base) for v in value]
    if isinstance(value, str) and "/" in value:
        return _ABS.sub(lambda m: portable_path(m.group(0), base), value)
    return value


def check_path(path: Any, what: str) -> None:
    """A user-given path must not contain a NUL byte (the OS cannot represent it); None passes."""
    if path is not None and "\0" in str(os.fspath(path)):
        raise InputError(f"{what} {str(os.fspath(path))!r} contains a NUL byte; give a valid path")


def check_writable_dir(path: str | os.PathLike) -> None:
    """Fail now, before hours of work, if ``path`` (a directory, created later) cannot be one.

    The nearest existing ancestor must be a writable directory; raises the ``OSError`` (ENOTDIR,
    EACCES, EROFS) the later ``mkdir``/write would raise, which the CLI prints as one line. Creates nothing.
    """
    path = os.path.abspath(os.fspath(path))
    probe = path
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    if os.path.isdir(probe) and not os.access(probe, os.W_OK | os.X_OK):
        if os.statvfs(probe).f_flag & os.ST_RDONLY:  # say why: no chmod will help here
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)


def check_outputs(outputs: Mapping[str, Any], inputs: Mapping[str, Any], *,
                  family: Optional[Tuple[str, Sequence[str]]] = None) -> None:
    """The one check of every path a command will write, all together, before any is written.

    ``outputs``/``inputs`` map a label (``"--save-adv"``) to a path or None. Refused in one line:
    an output that is an input (same path, a symlink to it or a hard link of it) or another output.
    With ``family = (name, suffixes)`` (the files ``name + suffix`` one output takes in its folder,
    e.g. a card, its sidecar and sweep files), an output in that folder whose file name is another
    name's file of the family is refused too: the card of ``Me.advtrain`` (``Me.advtrain.json``)
    is the sidecar of ``Me``, and ``--save-adv DIR/Other.json`` is the card of ``Other``."""
    seen: list = []
    ins = [(label, os.fspath(p)) for label, p in inputs.items() if p is not None]
    for label, out in outputs.items():
        if out is None:
            continue
        out = os.fspath(out)
        for other_label, other in ins + seen:
            if _same_file(out, other):
                raise InputError(f"{label} {out} is the same file as {other_label} {other}; writing "
                                 f"{label} would destroy it: choose another path for {label}")
        seen.append((label, out))
    if family is not None:
        _check_family(seen, *family)


def _check_family(outputs: list, name: str, suffixes: Sequence[str]) -> None:
    """No output in the family's folder is ``OTHER + suffix`` of another name ``OTHER``; a file
    name belongs to the name left by its longest matching suffix (as readers parse it: anything
    ending ``.advtrain.json`` is a sidecar)."""
    folders = {os.path.realpath(os.path.dirname(os.path.abspath(out))) for _, out in outputs
               if os.path.basename(out) in {name + s for s in suffixes}}
    for label, out in outputs:
        base = os.path.basename(out)
        if os.path.realpath(os.path.dirname(os.path.abspath(out))) not in folders:
            continue
        for suffix in sorted(suffixes, key=len, reverse=True):
            if not base.endswith(suffix):
                continue
            other = base[:-len(suffix)]
            if other != name:
                raise InputError(
                    f"{label} {out} is also the {suffix} file of the output named {other!r} in "
                    f"the same folder (of {name!r}); writing it would replace that output's "
                    f"file: choose another name, or another path for {label}")
            break


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except (OSError, ValueError):
        return False
