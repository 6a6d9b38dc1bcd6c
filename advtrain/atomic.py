"""Atomic writes: a crash or a full disk never leaves a half-written file or destroys an earlier one.

:func:`atomic_save` / :func:`atomic_write_text` / :func:`save_safetensors` write to a temporary file
in the target directory, fsync it and ``os.replace`` it over the target.

Example::

    from advtrain.atomic import atomic_save
    atomic_save({"model": model.state_dict(), "epoch": 3}, "runs/x/last.pt")
"""
from __future__ import annotations

import os
import tempfile
import threading
from typing import Any, Callable, Mapping

import torch

__all__ = ["atomic_save", "atomic_write_text", "save_safetensors"]


# --------------------------------------------------------------------------- writing
_UMASK_LOCK = threading.Lock()


def _file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open(path, "w")`` would give a new file."""
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(fh)`` on a temp file next to ``path``, fsync, then ``os.replace`` it onto ``path``.

    The file gets the mode a plain ``open`` would give it (0o666 minus the umask, e.g. 0644), not the
    0600 of :func:`tempfile.mkstemp`.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as fh:
            os.fchmod(fh.fileno(), _file_mode())
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            exc.filename = path  # a failed write (e.g. disk full) names the file it was writing
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    """Persist the rename itself (best effort: not every platform allows opening a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically: an existing ``path`` is intact if anything fails."""
    _atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (JSON, CSV, YAML, ...) to ``path`` atomically, UTF-8."""
    _atomic_write(path, lambda fh: fh.write(text), mode="w")


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save a flat ``{name: tensor}`` dict as safetensors, atomically (tensors made contiguous, on CPU)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    data = save(tensors, metadata=meta or None)
    _atomic_write(path, lambda fh: fh.write(data))
