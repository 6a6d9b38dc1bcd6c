"""Safe reading of user files: tensors only, nothing unpickled, every tensor checked.

- :func:`load_state_file` reads ``.pt``/``.pth`` with ``torch.load(weights_only=True)`` (only tensors,
  numbers, strings and containers; a pickled payload is refused and never runs) or ``.safetensors``.
  The storage sizes a ``.pt`` declares are checked against the file before anything is allocated
  (a 1 MB file cannot make the loader allocate 1 GB).
- :func:`check_tensors` (run on every file :func:`load_state_file` reads) refuses NaN/Inf and complex
  tensors, and with a reference state_dict integer-stored float weights.
- :func:`state_digest` / :func:`file_sha256` identify a model / a file.

Models are loaded through :mod:`advtrain.hub.loader`, which calls these; nothing else unpickles.

Example::

    from advtrain.io.safeload import load_state_file
    state = load_state_file("runs/x/last.pt")
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import pickletools
import stat
import warnings
import zipfile
from typing import Any, Mapping

import torch

from advtrain.errors import CheckpointError, InputError

__all__ = ["check_tensors", "file_sha256", "load_state_file", "state_digest"]


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


def read_regular(path, limit: int, what: str = "file", fix: str = "remove or replace it") -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them: a file someone sent is
    untrusted. A FIFO, a device, a directory or a larger file is one line ending in ``fix``
    (opened non-blocking and without following a final link, checked with fstat: a FIFO never
    blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise InputError(f"{path}: {e.strerror or e}; {fix}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path} is not a regular file; {fix}")
        if st.st_size > limit:
            raise InputError(f"{path} holds {st.st_size} bytes, more than a {what} may ({limit}); {fix}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        if len(data) > limit:  # grew while read
            raise InputError(f"{path} is larger than a {what} may be ({limit} bytes); {fix}")
        return data
    finally:
        os.close(fd)


def read_json_object(path, limit: int, what: str = "card", fix: str = "fix or remove the file") -> dict:
    """A JSON object read through :func:`read_regular` (the one reader of JSON files a user hands
    over: cards, sidecars); malformed JSON or another JSON type is one line."""
    raw = read_regular(path, limit, what, fix)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise InputError(f"{path} is not valid JSON ({str(e).splitlines()[0][:80]}); {fix}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} holds a JSON {type(data).__name__}, not a {what} object; {fix}")
    return data
