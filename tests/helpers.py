"""Tiny file generators for the reliability tests (not a test module).

- :func:`make_npz`: an ``image``/``label`` npz of a few 32x32 images, with any member replaced;
- :func:`tiny_checkpoint`: a trainer-format checkpoint of a small registry model;
- :class:`Payload` / :func:`write_pickle_bomb` / :func:`write_pickle_npz`: files whose *unpickling*
  would create a marker file (they must be refused, never loaded);
- :func:`write_config`: a YAML config for a seconds-long CPU run on generated npz data;
- :func:`snapshot` / :func:`temp_files`: what a failed command must leave untouched.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import yaml

from trainer_helpers import tiny_config


def make_npz(path, n: int = 8, num_classes: int = 10, seed: int = 0, **members) -> Path:
    """``np.savez(path, image=uint8 n×32×32×3, label=int64 in [0, num_classes))``; ``members``
    replace or add arrays (e.g. ``label=np.full(n, 10)``)."""
    rng = np.random.default_rng(seed)
    arrays = {"image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
              "label": (np.arange(n) % num_classes).astype(np.int64)}
    arrays.update(members)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return Path(path)


def tiny_checkpoint(path, arch: str = "wrn-10-1", dataset: str = "cifar10") -> Path:
    """A trainer-format checkpoint ``{"model", "arch", "dataset", "num_classes"}`` (random weights)."""
    from advtrain.models import create_model

    model = create_model(arch, dataset=dataset)
    n = 100 if dataset == "cifar100" else 10
    torch.save({"model": model.state_dict(), "arch": arch, "dataset": dataset,
                "num_classes": n}, path)
    return Path(path)


class Payload:
    """Unpickling this object creates ``marker`` (it runs ``Path.touch``)."""

    def __init__(self, marker):
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_pickle_bomb(path, marker, wrap=None) -> Path:
    """A ``torch.save`` file whose tensors sit next to a :class:`Payload`; ``wrap(payload)`` builds
    the saved object (default ``{"model": {"w": tensor}, "evil": payload}``)."""
    payload = Payload(marker)
    obj = wrap(payload) if wrap else {"model": {"w": torch.zeros(1)}, "evil": payload}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return Path(path)


def write_pickle_npz(path, marker, n: int = 8) -> Path:
    """An npz whose ``image`` member is an object array (a pickle inside the zip) holding a Payload."""
    image = np.empty(n, dtype=object)
    image[:] = [Payload(marker)] * n
    np.savez(path, image=image, label=np.zeros(n, np.int64))
    return Path(path)


def write_config(folder, name: str = "config.yaml", **sections) -> Path:
    """A YAML config (trainer_helpers.tiny_config, wrn-10-1, 2 epochs of 16 images) in ``folder``."""
    cfg = tiny_config(str(folder), **sections)
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def snapshot(root) -> dict:
    """``{relative path: sha256}`` of every file under ``root`` (empty dict if it does not exist)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def temp_files(root) -> list:
    """Temporary files (``*.tmp``, ``*.part``) left anywhere under ``root``."""
    return sorted(str(p) for p in Path(root).rglob("*") if p.suffix in (".tmp", ".part"))


def pickle_bytes(obj) -> bytes:
    """Plain pickle of ``obj`` (to hide a payload inside a raw pickle file)."""
    return pickle.dumps(obj)


def small_disk(monkeypatch, limit: int = 1024) -> None:
    """Fault injection at the write call: files the atomic writer opens refuse writes past ``limit``
    bytes with ENOSPC, as a full disk does (torch's zip writer then raises its RuntimeError)."""
    import errno

    import advtrain.io.atomic as atomic

    real = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def write(self, data):
            if self.n + len(data) > limit:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.n += len(data)
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    monkeypatch.setattr(atomic.os, "fdopen", lambda *a, **k: Full(real(*a, **k)))
