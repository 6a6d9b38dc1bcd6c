"""Safe checkpoint and file I/O.

Every user file goes through this module:

- :func:`load_state_file` reads ``.pt``/``.pth`` with ``torch.load(weights_only=True)`` (only tensors,
  numbers, strings and containers; a pickled payload is refused and never runs) or ``.safetensors``.
- :func:`atomic_save` / :func:`atomic_write_text` / :func:`save_safetensors` write to a temporary file in
  the target directory, fsync it and ``os.replace`` it over the target, so a crash never leaves a
  half-written checkpoint and an existing file survives a failed save.
- :func:`filter_state_dict` converts reference checkpoint formats (SPEC §8): ``state_dict`` /
  ``model_state_dict`` / ``model`` wrappers, ``module.0.`` / ``module.`` prefixes, ``sub_block`` keys.
- :func:`load_weights` checks keys and shapes *before* copying and fails with one line naming them.

Example::

    from advtrain.io import atomic_save, load_weights
    atomic_save({"model": model.state_dict(), "epoch": 3}, "runs/x/last.pt")
    load_weights(model, "checkpoints/cifar10/Linf/Cui2023Decoupled_WRN-34-10.pt")
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import warnings
import zipfile
from typing import Any, Callable, Mapping

import torch
from torch import nn

from advtrain.errors import CheckpointError

__all__ = [
    "atomic_save",
    "atomic_write_text",
    "file_sha256",
    "filter_state_dict",
    "load_state_file",
    "load_weights",
    "save_safetensors",
]

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_SHOW = 3  # how many offending keys a mismatch message lists per category


# --------------------------------------------------------------------------- reading
def load_state_file(path: str | os.PathLike) -> dict:
    """Read a checkpoint without unpickling code: ``.safetensors`` or ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` (one line) for a missing path, a directory, a truncated or corrupt
    file, or a file that contains pickled Python objects beyond tensors and plain containers.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file (.pt, .pth or .safetensors)")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found; check the path")
    if path.endswith(".safetensors") or _looks_like_safetensors(path):
        return _load_safetensors(path)
    return _load_torch(path)


def _looks_like_safetensors(path: str) -> bool:
    """safetensors = 8-byte little-endian header length, then a JSON header starting with '{'."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30)


def _load_safetensors(path: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(path, device="cpu"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({_one_line(exc)}); re-download or re-save it") from None


def _load_torch(path: str) -> dict:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise CheckpointError(
                f"{path}: refused to load: the file contains pickled Python objects beyond tensors "
                "(weights_only=True); re-save it as a plain state_dict (torch.save(model.state_dict(), f)) "
                "or safetensors"
            ) from None
        raise CheckpointError(f"{path}: corrupt checkpoint ({_one_line(exc)}); re-download or re-save it") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint ({_one_line(exc)}); re-download or re-save it"
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict (state_dict) at top level, found {type(obj).__name__}")
    return dict(obj)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else (text or type(exc).__name__)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- writing
def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(fh)`` on a temp file next to ``path``, fsync, then ``os.replace`` it onto ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as fh:
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


# --------------------------------------------------------------------------- converting
def filter_state_dict(obj: Mapping[str, Any], model_keys=None) -> dict[str, torch.Tensor]:
    """Turn a reference checkpoint into a plain state_dict (SPEC §8 "Checkpoint loading").

    1. unwrap ``obj['state_dict']`` / ``obj['model_state_dict']`` / ``obj['model']`` when present;
    2. strip a leading ``module.0.`` (DM ``DataParallel(Sequential(backbone))``) else ``module.``;
    3. when ``model_keys`` is given and has no ``sub_block`` key, drop keys containing ``sub_block``;
    4. keep only tensor values.
    """
    sd = _unwrap(obj)
    keys = list(sd)
    prefix = ""
    if keys and all(k.startswith("module.0.") for k in keys):
        prefix = "module.0."
    elif keys and all(k.startswith("module.") for k in keys):
        prefix = "module."
    out = {k[len(prefix):]: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if model_keys is not None and not any("sub_block" in k for k in model_keys):
        out = {k: v for k, v in out.items() if "sub_block" not in k}
    return out


def _unwrap(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a state_dict (dict of tensors), found {type(obj).__name__}")
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return obj


def load_weights(model: nn.Module, source, *, strict: bool = True, name: str | None = None) -> nn.Module:
    """Load ``source`` (a path or a dict) into ``model`` after checking keys and shapes; returns ``model``.

    With ``strict=True`` any missing/unexpected key or shape mismatch raises one-line
    :class:`CheckpointError`; with ``strict=False`` only shape mismatches are fatal.
    """
    if name is None:  # how the message names a dict source (e.g. the file it was read from)
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "checkpoint"
    raw = load_state_file(source) if isinstance(source, (str, os.PathLike)) else source
    own = model.state_dict()
    sd = filter_state_dict(raw, own.keys())
    problem = _mismatch(sd, own, strict)
    if problem:
        raise CheckpointError(f"{name}: does not fit {_arch(model)}: {problem}; wrong --arch or --dataset/num_classes?")
    model.load_state_dict(sd, strict=strict)
    return model


def _mismatch(sd: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], strict: bool) -> str:
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if strict and missing:
        parts.append(f"{len(missing)} missing keys ({_head(missing)})")
    if strict and unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_head(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches ({_head(shapes)})")
    return "; ".join(parts)


def _head(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (", ..." if len(items) > _SHOW else "")


def _arch(model: nn.Module) -> str:
    return getattr(model, "arch_name", None) or type(model).__name__
