"""Where a run's data came from: :func:`provenance` -> a plain dict for checkpoints and card sidecars.

It names the source actually used (``npz`` file / CIFAR ``binary`` folder / ``python`` pickle folder read
by torchvision), every file read with its size and SHA-256, any generated (synthetic) npz files, the
subset mode, the holdout and the seed. Hashing a 50M-image file takes minutes, so each file is hashed at
most once per process (memoised by real path, size and modification time): a run hashes its data once,
at start, and the dict says so in ``"hashed"``.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from advtrain.data.sources import Source, source_files, resolve_source
from advtrain.io.safeload import file_sha256

#: Source.kind -> the name recorded in the provenance
SOURCE_NAMES = {"npz": "npz", "binary": "binary folder", "torchvision": "python-pickle folder"}

_HASHES: Dict[tuple, str] = {}


def cached_sha256(path: str) -> str:
    """SHA-256 of ``path``, computed once per process for a given (real path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


def _files(paths: Sequence[str]) -> List[Dict[str, Any]]:
    return [{"path": os.path.abspath(p), "bytes": os.path.getsize(p), "sha256": cached_sha256(p)}
            for p in paths]


def _subset(subset: Union[None, int, Sequence[int]]) -> Dict[str, Any]:
    if subset is None:
        return {"mode": "all"}
    if isinstance(subset, (int, np.integer)):
        return {"mode": "first", "n": int(subset)}
    chosen = np.asarray(subset, dtype=np.int64)
    return {"mode": "indices", "n": int(chosen.size),
            "indices_sha256": hashlib.sha256(chosen.tobytes()).hexdigest()}


def provenance(dataset: str, split: str = "train", *, root: Optional[str] = None, npz: Optional[str] = None,
               synthetic_npz: Union[str, Sequence[str]] = (), synthetic_fraction: Optional[float] = None,
               subset=None, holdout: int = 0, seed: Optional[int] = None) -> Dict[str, Any]:
    """The data provenance of ``dataset``/``split`` resolved as the loaders resolve it (same arguments).

    Call it after the data was loaded (a torchvision download must have happened). For training pass
    what :func:`~advtrain.data.build_train_loader` got (``npz`` = its ``train_npz``); for evaluation the
    test source and ``subset`` = the number of test images used.
    """
    src: Source = resolve_source(dataset, split, root=root, npz=npz)
    out: Dict[str, Any] = {
        "dataset": dataset, "split": split, "source": SOURCE_NAMES[src.kind],
        "location": os.path.abspath(src.path), "files": _files(source_files(src)),
        "subset": _subset(subset), "holdout": int(holdout), "seed": seed,
        "hashed": "sha256 of every file, once per process (at run start)",
    }
    paths = [synthetic_npz] if isinstance(synthetic_npz, str) else list(synthetic_npz)
    if paths:
        out["synthetic"] = {"files": _files(paths), "fraction": synthetic_fraction}
    return out
