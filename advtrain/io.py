"""Safe checkpoint and file I/O.

Every user file goes through this module:

- :func:`load_state_file` reads ``.pt``/``.pth`` with ``torch.load(weights_only=True)`` (only tensors,
  numbers, strings and containers; a pickled payload is refused and never runs) or ``.safetensors``.
- :func:`atomic_save` / :func:`atomic_write_text` / :func:`save_safetensors` write to a temporary file in
  the target directory, fsync it and ``os.replace`` it over the target, so a crash never leaves a
  half-written checkpoint and an existing file survives a failed save.
- :func:`filter_state_dict` converts reference checkpoint formats (SPEC §8): ``state_dict`` /
  ``model_state_dict`` / ``model`` wrappers, ``module.0.`` / ``module.`` prefixes, ``sub_block`` keys.
- :func:`load_weights` checks keys, shapes and dtypes *before* copying and fails with one line naming
  them; :func:`check_tensors` (run on every file :func:`load_state_file` reads) refuses NaN/Inf and
  complex tensors, and the storage sizes a ``.pt`` declares are checked against the file before
  anything is allocated (a 1 MB file cannot make the loader allocate 1 GB).
- :func:`check_model_name` is the one validator of names that become file names (cards, exports).
- :func:`check_outputs` refuses an output path that is (or links to) an input or another output.

Example::

    from advtrain.io import atomic_save, load_weights
    atomic_save({"model": model.state_dict(), "epoch": 3}, "runs/x/last.pt")
    load_weights(model, "checkpoints/cifar10/Linf/Cui2023Decoupled_WRN-34-10.pt")
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import pickletools
import re
import tempfile
import threading
import warnings
import zipfile
from typing import Any, Callable, Mapping

import torch
from torch import nn

from advtrain.errors import CheckpointError, InputError

__all__ = [
    "atomic_save",
    "atomic_write_text",
    "check_model_name",
    "check_outputs",
    "check_path",
    "check_tensors",
    "check_writable_dir",
    "file_sha256",
    "filter_state_dict",
    "load_state_file",
    "load_weights",
    "save_safetensors",
    "state_digest",
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
        obj = _load_safetensors(path)
    else:
        obj = _load_torch(path)
    check_tensors(obj, path)
    return obj


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
    _check_declared_storages(path)
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


# ---------------------------------------------------------------- bounded loads: declared storage sizes
_ZIP_MAGIC = b"PK\x03\x04"


def _check_declared_storages(path: str) -> None:
    """Refuse a ``.pt`` whose pickle declares tensor storages larger than the file can hold.

    ``torch.load`` allocates each storage with the size its pickle record declares before reading
    the bytes, so a crafted 1 MB file could make it allocate gigabytes. The pickle opcodes are read
    here *without executing anything* (:func:`_declared_storages`): in the zip format every storage
    ``<archive>/data/<key>`` must be an uncompressed record at least as large as declared (torch
    writes them uncompressed); in the legacy format the declared storages together must fit in the
    file. A file this scan cannot parse goes on to ``torch.load``, which reports it.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == _ZIP_MAGIC
    if is_zip:
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint (not a readable zip archive: "
                                  f"{_one_line(exc)}); re-download or re-save it") from None
        with zf:
            records = {info.filename: info for info in zf.infolist()}
            pkl = [n for n in records if n.endswith("data.pkl") and n.count("/") == 1]
            if not pkl:
                return  # torch reports the missing record
            info = records[pkl[0]]
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                raise CheckpointError(f"{path}: corrupt or crafted checkpoint (compressed pickle record); "
                                      "re-save it with torch.save")
            try:
                storages = _declared_storages([zf.read(info)])
            except CheckpointError as exc:
                raise CheckpointError(f"{path}: {exc}") from None
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({_one_line(exc)}); "
                                      "re-download or re-save it") from None
            prefix = pkl[0][: -len("data.pkl")] + "data/"
            for key, nbytes in storages.items():
                rec = records.get(prefix + key)
                have = rec.file_size if rec is not None and rec.compress_type == zipfile.ZIP_STORED else 0
                if nbytes > have or have > size:
                    raise CheckpointError(
                        f"{path}: corrupt or crafted checkpoint: tensor storage {key!r} declares "
                        f"{nbytes} bytes but the file holds {have} for it; nothing was allocated; "
                        "re-download or re-save it")
        return
    try:
        with open(path, "rb") as fh:
            storages = _declared_storages(fh, pickles=5)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    total = sum(storages.values())
    if total > size:
        raise CheckpointError(f"{path}: corrupt or crafted checkpoint: its tensor storages declare {total} "
                              f"bytes but the file has {size}; nothing was allocated; re-download or re-save it")


def _declared_storages(source, pickles: int = 1) -> dict:
    """``{storage key: declared bytes}`` from torch's persistent ids ``('storage', type, key, location,
    numel, ...)``, found by simulating the pickle stack (opcodes only: nothing is imported or called).

    ``source`` is a list of pickle byte strings or a binary file holding up to ``pickles`` pickles in a
    row (the legacy format). A structure this scan does not understand raises :class:`CheckpointError`;
    unparseable bytes end the scan (``torch.load`` then reports them).
    """
    found: dict = {}
    streams = [io.BytesIO(b) for b in source] if isinstance(source, list) else [source] * pickles
    mark = object()
    for stream in streams:
        stack: list = []
        memo: dict = {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                name = op.name
                if name == "MARK":
                    stack.append(mark)
                elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                    memo[arg] = stack[-1]
                elif name == "MEMOIZE":
                    memo[len(memo)] = stack[-1]
                elif name in ("BINGET", "LONG_BINGET", "GET"):
                    stack.append(memo.get(arg))
                elif name == "GLOBAL":
                    stack.append(("global", arg))
                elif name == "STACK_GLOBAL":
                    qual, mod = stack.pop(), stack.pop()
                    stack.append(("global", f"{mod} {qual}"))
                elif name == "TUPLE":
                    i = len(stack) - 1 - stack[::-1].index(mark)
                    items = tuple(stack[i + 1:])
                    del stack[i:]
                    stack.append(items)
                elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                    k = int(name[-1])
                    items = tuple(stack[-k:])
                    del stack[-k:]
                    stack.append(items)
                elif name == "EMPTY_TUPLE":
                    stack.append(())
                elif name == "BINPERSID":
                    key, nbytes = _storage_record(stack.pop())  # ValueError: refused below
                    found[key] = max(found.get(key, 0), nbytes)
                    stack.append(None)
                elif name == "STOP":
                    break
                elif op.arg is not None and not op.stack_before and len(op.stack_after) == 1:
                    stack.append(arg)  # a constant: int, string, float, bytes
                else:
                    _generic(stack, op, mark)
        except _NotStorage as exc:
            raise CheckpointError(f"corrupt or crafted checkpoint: {exc}; re-save it with torch.save") from None
        except (ValueError, IndexError, EOFError, TypeError, KeyError):
            break  # bytes pickletools cannot parse: torch.load will refuse them too
    return found


class _NotStorage(Exception):
    """A persistent id that is not ``('storage', ...)``."""


def _generic(stack: list, op, mark) -> None:
    """Apply the stack effect of an opcode whose values do not matter here."""
    before = list(op.stack_before)
    if pickletools.markobject in before:
        i = len(stack) - 1 - stack[::-1].index(mark)
        del stack[i:]
        below = before.index(pickletools.markobject)
    else:
        below = len(before)
    if below:
        if len(stack) < below:
            raise IndexError("pickle stack underflow")
        del stack[-below:]
    stack.extend([None] * len(op.stack_after))


def _storage_record(pid) -> tuple:
    """(key, declared bytes) of torch's persistent id; anything else is refused."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
            and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0
            and isinstance(pid[1], tuple) and len(pid[1]) == 2 and pid[1][0] == "global"):
        raise _NotStorage("a persistent id that is not a torch tensor storage")
    mod, _, cls = str(pid[1][1]).partition(" ")
    storage = getattr(torch, cls, None) if mod == "torch" and cls.endswith("Storage") else None
    with warnings.catch_warnings():  # TypedStorage is deprecated; only its dtype is read
        warnings.simplefilter("ignore")
        dtype = getattr(storage, "dtype", None) if storage is not None else None
    size = torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 1
    return pid[2], pid[4] * size


# ---------------------------------------------------------------- what a loaded file may contain
def check_tensors(obj: Any, name: str = "checkpoint", reference: Mapping[str, torch.Tensor] | None = None,
                  where: str = "") -> None:
    """Refuse tensors no model weight can be: NaN/Inf entries, complex dtypes, and (with ``reference``,
    a model's own state_dict) a non-float tensor where the model has a float one.

    ``obj`` is walked recursively (dicts, lists, tuples); ``name`` (the file) starts the one-line
    :class:`CheckpointError`. Every loader calls this: eval, export, average and resume.
    """
    if isinstance(obj, torch.Tensor):
        label = where or "tensor"
        if obj.is_complex():
            raise CheckpointError(f"{name}: {label} has complex dtype {obj.dtype}; a model's weights are "
                                  "real: re-save the checkpoint from the trained model")
        if obj.is_floating_point() and obj.numel() and not bool(torch.isfinite(obj).all()):
            bad = int((~torch.isfinite(obj)).sum())
            raise CheckpointError(f"{name}: {label} holds {bad} NaN/Inf values of {obj.numel()}; the "
                                  "weights are broken (a diverged run?): use an earlier checkpoint")
        own = reference.get(where) if reference is not None else None
        if own is not None and own.is_floating_point() and not obj.is_floating_point():
            raise CheckpointError(f"{name}: {label} is stored as {obj.dtype} but the model's is "
                                  f"{own.dtype}; a float weight stored as integers/bools is corrupt: "
                                  "re-save the checkpoint from the trained model")
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            check_tensors(v, name, reference, f"{where}.{k}" if where and reference is None else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_tensors(v, name, None, f"{where}[{i}]")


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state_dict (names, dtypes, shapes and bytes): which model a result belongs to."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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


# --------------------------------------------------------------------------- output names and paths
#: a name that becomes a file name (card, export, run): RobustBench ids such as
#: ``Cui2023Decoupled_WRN-34-10``; no separators, no leading dot, bounded length
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9._+\-]*")
MODEL_NAME_MAX = 128


def check_model_name(name: Any, what: str = "--name") -> str:
    """Return ``name`` if it is a safe file-name id, else raise a one-line :class:`InputError`.

    Allowed: 1 to 128 characters from ``A-Z a-z 0-9 . _ + -``, not starting with a dot (so no
    ``..``, no hidden file, no path separator, no NUL byte). ``what`` names the option in the message
    (``"--name"``, ``"run.name"``, ...).
    """
    text = name if isinstance(name, str) else str(name)
    if isinstance(name, str) and len(text) <= MODEL_NAME_MAX and MODEL_NAME_RE.fullmatch(text):
        return text
    shown = repr(text) if len(text) <= 60 else repr(text[:60]) + "..."
    if not isinstance(name, str):
        why = f"is a {type(name).__name__}, not a string"
    elif not text:
        why = "is empty"
    elif len(text) > MODEL_NAME_MAX:
        why = f"is {len(text)} characters long (at most {MODEL_NAME_MAX})"
    elif any(not re.fullmatch(r"[A-Za-z0-9._+\-]", c) for c in text):
        bad = sorted({c for c in text if not re.fullmatch(r"[A-Za-z0-9._+\-]", c)})
        why = "contains " + ", ".join(repr(c) for c in bad[:5])
    else:
        why = "starts with a dot"
    raise InputError(f"{what} {shown} {why}; use 1-{MODEL_NAME_MAX} characters from A-Z a-z 0-9 . _ + - "
                     "not starting with a dot, e.g. Author2024Word_WRN-34-10")


def check_path(path: Any, what: str) -> None:
    """A user-given path must not contain a NUL byte (the OS cannot represent it); None passes."""
    if path is not None and "\0" in str(os.fspath(path)):
        raise InputError(f"{what} {str(os.fspath(path))!r} contains a NUL byte; give a valid path")


def check_writable_dir(path: str | os.PathLike) -> None:
    """Fail now, before hours of work, if ``path`` (a directory, created later) cannot be one.

    The nearest existing ancestor must be a writable directory; raises the ``OSError`` (ENOTDIR,
    EACCES) the later ``mkdir``/write would raise, which the CLI prints as one line. Creates nothing.
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
    check_tensors(sd, name, reference=own)
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
