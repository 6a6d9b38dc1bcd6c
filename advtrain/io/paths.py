"""Checks of user-given paths at the CLI edge, before any work starts."""
from __future__ import annotations

import errno
import os
from typing import Any, Mapping

from advtrain.errors import InputError

__all__ = ["check_outputs", "check_path", "check_writable_dir"]


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


def check_outputs(outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """Refuse an output path that is an input (same path, a symlink to it or a hard link of it) or
    another output. ``outputs``/``inputs`` map a label (``"--save-adv"``) to a path or None."""
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


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except (OSError, ValueError):
        return False
