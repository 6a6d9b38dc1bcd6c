"""Atomic writes: a crash, a signal or a full disk never leaves a half-written file or destroys an earlier one.

- :func:`atomic_save` / :func:`atomic_write_text` / :func:`save_safetensors` write to a temporary file
  in the target directory, fsync it and ``os.replace`` it over the target.
- :func:`commit_files` commits an output of several files (export + description, card + sidecar) as
  one: all appear, or the rerun sees the output as absent and writes it again.
- A write that fails for lack of space (``ENOSPC``/``EDQUOT``, or the ``RuntimeError`` torch's zip
  writer raises instead) becomes one ``OSError(ENOSPC)`` naming the folder and the space needed,
  which the CLI prints as one line; the temporary file is removed and earlier files are untouched.

Example::

    from advtrain.io.atomic import atomic_save, commit_files
    atomic_save({"model": model.state_dict(), "epoch": 3}, "runs/x/last.pt")
    commit_files({"out/m.pt": lambda fh: torch.save(sd, fh), "out/m.json": "{...}"}, primary="out/m.pt")
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from typing import Any, Callable, Mapping, Union

import torch

__all__ = ["atomic_save", "atomic_write_text", "commit_files", "save_safetensors", "tensor_bytes"]

#: what a file's content may be given as: bytes, text (UTF-8) or ``write(binary_file_handle)``
Content = Union[bytes, str, Callable[[Any], None]]
_FULL = (errno.ENOSPC, errno.EDQUOT)
_UMASK_LOCK = threading.Lock()


def _file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open(path, "w")`` would give a new file."""
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


class _Counting:
    """A binary file wrapper that counts bytes and keeps the first write error: torch's zip writer
    swallows the OSError of a full disk and raises ``RuntimeError("... unexpected pos ...")``."""

    def __init__(self, fh):
        self.fh, self.written, self.error = fh, 0, None

    def write(self, data) -> int:
        try:
            n = self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise
        self.written += len(data)
        return n

    def flush(self) -> None:
        self.fh.flush()


def _write_temp(path: str, content: Content, size_hint: int = 0) -> str:
    """Write ``content`` to a fsynced temporary file next to ``path``; return its name.

    On any failure the temporary file is removed; a failure for lack of space is raised as
    :func:`_disk_full`. The file gets the mode a plain ``open`` would give it (0o666 minus the umask),
    not the 0600 of :func:`tempfile.mkstemp`.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    counter = None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _file_mode())
            counter = _Counting(fh)
            data(counter) if callable(data) else counter.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as exc:
        _remove(tmp)
        written = counter.written if counter is not None else 0
        need = max(size_hint, written, 0 if callable(data) else len(data))
        cause = counter.error if counter is not None and counter.error is not None else exc
        if isinstance(cause, OSError) and cause.errno in _FULL:
            raise _disk_full(directory, path, need) from None
        if isinstance(exc, RuntimeError) and shutil.disk_usage(directory).free < need:
            raise _disk_full(directory, path, need) from None  # the zip writer's disguise
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            exc.filename = path  # a failed write names the file it was writing
        raise
    return tmp


def _disk_full(directory: str, path: str, need: int) -> OSError:
    free = shutil.disk_usage(directory).free
    return OSError(errno.ENOSPC, f"No space left on device: writing {os.path.basename(path)} needs about "
                                 f"{_size(need)}, {_size(free)} free in this folder", directory)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _remove_stale_temps(path: str) -> None:
    """Temporaries of ``path`` left by a writer killed before it could remove them (SIGKILL/TERM)."""
    directory, base = os.path.split(os.path.abspath(path))
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith(f".{base}.") and name.endswith(".tmp"):
                _remove(os.path.join(directory, name))


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


def _rename(tmp: str, path: str) -> None:
    """``os.replace(tmp, path)``; a refusal (a directory in the way: EISDIR) names ``path``, the
    file the user knows, not the temporary."""
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None


def _atomic_write(path: str | os.PathLike, content: Content, size_hint: int = 0) -> None:
    path = os.fspath(path)
    tmp = _write_temp(path, content, size_hint)
    try:
        _rename(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def commit_files(files: Mapping[str | os.PathLike, Content], primary: str | os.PathLike,
                 size_hint: int = 0) -> None:
    """Write several files as one output: all of them appear, or the output counts as absent.

    ``files`` maps each path to its content: ``bytes``, ``str`` (written as UTF-8) or a callable
    ``write(fh)`` given a binary file handle (e.g. ``lambda fh: torch.save(sd, fh)``). ``primary``
    (one of the paths) is the file whose presence means "this output is complete".

    Order: every file is written to a fsynced temporary next to its target first (a failure, e.g. a
    full disk, removes them all and touches no existing file); then an existing ``primary`` is
    removed, the other files are renamed into place, and ``primary`` is renamed last. So a run killed
    at any point leaves either the complete new output, the complete old one, or secondary files
    without ``primary``: callers test only ``primary`` for "already exists" (the refusal without
    ``--overwrite``), and a rerun then replaces such leftovers (and temporaries a killed writer
    left) without ``--overwrite``. ``size_hint`` (bytes the callables will write, e.g.
    :func:`tensor_bytes`) makes a full-disk message state the whole output's size.
    """
    paths = {os.fspath(p): c for p, c in files.items()}
    primary = os.fspath(primary)
    if primary not in paths:
        raise ValueError(f"commit_files: primary {primary!r} is not one of the files")
    known = size_hint + sum(len(c) for c in paths.values() if not callable(c))  # the whole output
    for path in paths:
        _remove_stale_temps(path)
    temps: dict = {}
    try:
        for path, content in paths.items():
            temps[path] = _write_temp(path, content, size_hint=known)
        _remove(primary)  # from here until the last rename the output reads as incomplete
        for path in sorted(temps, key=lambda p: p == primary):
            _rename(temps[path], path)
            del temps[path]  # only once renamed: a failed rename leaves its temporary to remove
    finally:
        for tmp in temps.values():
            _remove(tmp)
    for directory in {os.path.dirname(os.path.abspath(p)) for p in paths}:
        _fsync_dir(directory)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (dicts, lists, tuples): about the size ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically: an existing ``path`` is intact if anything fails."""
    _atomic_write(path, lambda fh: torch.save(obj, fh), size_hint=tensor_bytes(obj))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (JSON, CSV, YAML, ...) to ``path`` atomically, UTF-8."""
    _atomic_write(path, text)


def safetensors_bytes(state_dict: Mapping[str, torch.Tensor], metadata: dict | None = None) -> bytes:
    """A flat ``{name: tensor}`` dict as safetensors bytes (tensors made contiguous, on CPU)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return save(tensors, metadata=meta or None)


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save a flat ``{name: tensor}`` dict as safetensors, atomically."""
    _atomic_write(path, safetensors_bytes(state_dict, metadata))
