"""Training checkpoints: what they hold, RNG capture/restore, provenance, atomic writing.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (readable with
``torch.load(..., weights_only=True)``)::

    model, ema (or absent), arch, dataset, num_classes, config    <- read by the evaluator
    optimizer, objective, epoch (completed epochs), batch (batches done in the next epoch),
    step (optimizer steps), rng, epoch_rng (RNG at the start of the running epoch, mid-epoch only),
    running (in-epoch metric sums), history (metrics rows), trace (per-step curve points),
    ema_updates, best, teacher ({"file", "sha256"} of a distillation teacher), versions,
    git_commit, format

Each part of a run owns its state (:mod:`advtrain.train.parts`); :func:`pack` lays the parts' states out
as above and :func:`unpack` reads them back. The layout is that of the first release, so its
checkpoints resume and every reader of ``model`` / ``ema`` works unchanged.

``RUN_DIR/epoch_{e}.pt`` is written after epoch ``e``; ``RUN_DIR/last.pt`` after every epoch and
every ``run.checkpoint_every_steps`` optimizer steps. Files are replaced atomically (temp file +
fsync + rename), so a crash at any instant leaves only complete files.
"""
from __future__ import annotations

import os
import random
import re
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from advtrain.errors import CheckpointError
from advtrain.io.atomic import atomic_save
from advtrain.io.safeload import check_tensors, load_state_file

FORMAT = "advtrain-train-v1"
LAST = "last.pt"


def epoch_path(run_dir: str, epoch: int) -> str:
    return os.path.join(run_dir, f"epoch_{epoch}.pt")


def last_path(run_dir: str) -> str:
    return os.path.join(run_dir, LAST)


# ----------------------------------------------------------------------------- RNG

def rng_state() -> Dict[str, Any]:
    """Torch CPU/CUDA, numpy and Python ``random`` states as tensors, numbers and lists."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": list(mt), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- read / write

def cpu_state(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Detached CPU copies (a checkpoint must not alias live tensors)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}


#: parts whose state entries are spread over top-level keys: {part: {entry: file key}}; every other
#: part's state is stored whole under the part's name
SPREAD = {
    "ema": {"shadow": "ema", "updates": "ema_updates"},
    "progress": {k: k for k in ("epoch", "batch", "step", "running", "history", "epoch_rng",
                                "best", "guard", "trace")},
}


def pack(states: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """The checkpoint entries of ``{part: state}`` (no ``ema`` key before the first EMA update)."""
    out: Dict[str, Any] = {}
    for part, state in states.items():
        if part not in SPREAD:
            out[part] = state
            continue
        if part == "ema" and not state.get("shadow"):
            continue
        out.update({SPREAD[part][k]: v for k, v in state.items()})
    return out


def unpack(ckpt: Dict[str, Any], parts) -> Dict[str, Dict[str, Any]]:
    """Inverse of :func:`pack` for the part names ``parts`` (a part absent from the file is left
    out: e.g. ``ema`` of a run whose EMA had not started)."""
    out: Dict[str, Dict[str, Any]] = {}
    for part in parts:
        if part not in SPREAD:
            if part in ckpt:
                out[part] = ckpt[part]
        elif part == "ema":
            if isinstance(ckpt.get("ema"), dict):
                out[part] = {"shadow": ckpt["ema"], "updates": ckpt.get("ema_updates", 0)}
        else:
            out[part] = {k: ckpt[key] for k, key in SPREAD[part].items() if key in ckpt}
    return out


def save(payload: Dict[str, Any], path: str) -> None:
    """Atomically write ``payload`` (plus the format tag) to ``path``."""
    atomic_save({"format": FORMAT, **payload}, path)


def load(path: str) -> Dict[str, Any]:
    """Read a training checkpoint safely (weights_only); refuse files that are not one.

    Its ``model``/``ema`` weights are checked against the recorded architecture built on the meta
    device (shapes and dtypes of the keys they share; :mod:`advtrain.hub.loader`) before any model
    is built from it; the trainer's strict load then checks the key sets.
    """
    from advtrain.models.convert import check_fits
    from advtrain.hub.loader import recorded_options, skeleton

    ckpt = load_state_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an advtrain training checkpoint (no format "
                              f"{FORMAT!r}); give the run directory written by 'advtrain train'")
    _check_progress(ckpt, path)
    model = skeleton(ckpt.get("arch"), ckpt.get("dataset"), ckpt.get("num_classes"),
                     recorded_options(ckpt))
    for key in ("model", "ema"):  # NaN/Inf were refused by load_state_file; now keys/shapes/dtypes
        if isinstance(ckpt.get(key), dict):
            if model is not None:
                check_fits(model, ckpt[key], strict=False, name=f"{path} [{key}]")
            else:
                check_tensors(ckpt[key], f"{path} [{key}]")
    return ckpt


def _check_progress(ckpt: Dict[str, Any], path: str) -> None:
    """``epoch``, ``batch`` and ``step`` (where present) are counts, and ``epoch`` is within the
    recorded ``optim.epochs``: a resume would otherwise fail on a comparison or report a finished
    run that never trained."""
    for key in ("epoch", "batch", "step"):
        value = ckpt.get(key, 0)
        if type(value) is not int or value < 0:
            raise CheckpointError(f"{path}: {key} must be a count >= 0, got {str(value)[:40]!r} "
                                  f"({type(value).__name__}); the file was not written by advtrain")
    optim = ckpt.get("config", {}).get("optim") if isinstance(ckpt.get("config"), dict) else None
    epochs = optim.get("epochs") if isinstance(optim, dict) else None
    if type(epochs) is int and ckpt.get("epoch", 0) > epochs:
        raise CheckpointError(f"{path}: epoch {ckpt['epoch']} is beyond the {epochs} epochs of its "
                              "recorded config; the file was not written by this run")


def latest(run_dir: str) -> Optional[str]:
    """``RUN_DIR/last.pt`` if it exists."""
    path = last_path(run_dir)
    return path if os.path.isfile(path) else None


def epoch_checkpoints(run_dir: str) -> list:
    """``RUN_DIR/epoch_N.pt`` paths, newest (highest N) first."""
    found = [(int(m.group(1)), name) for name in os.listdir(run_dir)
             if (m := re.fullmatch(r"epoch_(\d+)\.pt", name))]
    return [os.path.join(run_dir, name) for _, name in sorted(found, reverse=True)]


def newest_intact_epoch(run_dir: str) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """(path, state) of the highest ``epoch_N.pt`` that loads, or (None, None)."""
    for path in epoch_checkpoints(run_dir):
        try:
            return path, load(path)
        except CheckpointError:
            continue
    return None, None


def resume_point(run_dir: str) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """(path, state) to resume ``run_dir`` from: ``last.pt``, else the newest intact ``epoch_N.pt``
    ((None, None) when the run has no checkpoint yet).

    A ``last.pt`` that exists but does not load is refused (it may hold steps no epoch file has, and
    resuming would overwrite it); the message names the intact fallback and how to use it.
    """
    last = last_path(run_dir)
    if os.path.isfile(last):
        try:
            return last, load(last)
        except CheckpointError as e:
            reason = str(e).split("; ")[0]  # what is wrong with it, without the generic fix
            fallback, state = newest_intact_epoch(run_dir)
            if fallback is None:
                hint = "no intact epoch_N.pt to fall back on; start a new run"
            else:
                hint = (f"the newest intact checkpoint is {fallback} (epoch {state['epoch']}): move "
                        f"{last} away (e.g. to last.pt.bad) and resume again to continue from it")
            raise CheckpointError(f"cannot resume: {reason}; {hint}") from None
    return newest_intact_epoch(run_dir)
