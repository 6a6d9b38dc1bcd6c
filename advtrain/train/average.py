r"""Post-hoc per-epoch weight average over a run's ``epoch_{i}.pt`` checkpoints (SPEC 5.4, ``swa.py``).

For epochs ``start..end``::

    avg = theta_start;   avg <- (1 - tau) * theta_i + tau * avg   for i = start+1 .. end

i.e. ``avg = tau^(end-start) theta_start + sum_{i>start} (1 - tau) tau^(end-i) theta_i``. Every
floating-point entry is averaged (BN running statistics included, no re-estimation, as in the
reference), accumulating in float64; integer buffers (``num_batches_tracked``) are taken from
epoch ``end``. Checkpoints are streamed one at a time. The result is written as
``RUN_DIR/average_tau{tau}_{start}_{end}.pt`` (``average_ema_tau...`` for ``key="ema"``; ``tau``
in full when ``:g`` would round it, so two settings never write one file) in the training
checkpoint format (``model``, ``arch``, ``dataset``, ``num_classes``, ``config``), so ``advtrain eval`` reads it like any checkpoint.

Example::

    advtrain average runs/gkl_at_cifar10 --tau 0.9 --start 1 --end 200
"""
from __future__ import annotations

import itertools
import os
from typing import Any, Dict, Optional, Tuple

import torch

from advtrain.train import checkpoint as ckpt_io
from advtrain.errors import CheckpointError, InputError

#: keys of the epoch checkpoint carried over to the average (training state is dropped)
META_KEYS = ("arch", "dataset", "num_classes", "config", "versions", "git_commit")


def average_path(run_dir: str, tau: float, start: int, end: int, key: str = "model") -> str:
    """One file per distinct setting: ``tau`` as ``:g`` when that is exact, else in full (``repr``:
    ``:g`` alone gave 0.9 and 0.9000001 one name), and ``average_ema_...`` for the EMA weights'
    average (it replaced the model's before)."""
    kind = "" if key == "model" else f"{key}_"
    short = f"{tau:g}"
    text = short if float(short) == float(tau) else repr(float(tau))
    return os.path.join(run_dir, f"average_{kind}tau{text}_{start}_{end}.pt")


def available_epochs(run_dir: str):
    """Sorted epochs e with an ``epoch_{e}.pt`` in ``run_dir``."""
    out = []
    for name in os.listdir(run_dir):
        stem = name[len("epoch_"):-len(".pt")] if name.startswith("epoch_") and name.endswith(".pt") else ""
        if stem.isdigit():
            out.append(int(stem))
    return sorted(out)


def average_states(states, tau: float, labels=None) -> Dict[str, torch.Tensor]:
    """Epoch EMA of an iterable of state dicts (first = ``theta_start``); see the module docstring.

    All states must have the same keys, shapes and dtypes (one-line :class:`CheckpointError`
    otherwise, naming the state by ``labels[i]`` when given)."""
    avg: Optional[Dict[str, torch.Tensor]] = None
    last = None
    for i, sd in enumerate(states):
        if avg is None:
            avg = {k: v.double() if v.is_floating_point() else v.clone() for k, v in sd.items()}
            first = {k: (v.dtype, tuple(v.shape)) for k, v in sd.items()}
            first_label = labels[0] if labels else "the first checkpoint"
        else:
            label = labels[i] if labels else f"checkpoint {i + 1}"
            if set(sd) != set(avg):
                raise CheckpointError("epoch checkpoints of the run have different keys; they must "
                                      "come from the same model")
            for k, v in sd.items():
                if (v.dtype, tuple(v.shape)) != first[k]:
                    raise CheckpointError(
                        f"cannot average: {k} is {first[k][1]} {first[k][0]} in {first_label} but "
                        f"{tuple(v.shape)} {v.dtype} in {label}; the epochs must come from the same "
                        "model (average a range of one run: --start/--end)")
            for k, v in sd.items():
                if v.is_floating_point():
                    avg[k].mul_(tau).add_(v.double(), alpha=1.0 - tau)
        last = sd
    if avg is None:
        raise InputError("no checkpoints to average")
    return {k: (v.to(last[k].dtype) if last[k].is_floating_point() else last[k].clone())
            for k, v in avg.items()}


def run_average_settings(run_dir: str) -> Tuple[Dict[str, Any], str]:
    """``({"tau", "start", "end"}, source)``: the ``average:`` section of ``RUN_DIR/config.yaml``
    (resolved: ``end`` = ``optim.epochs`` when unset), else the reference ``swa.py 0.9 1`` with
    ``end`` None (the last available epoch)."""
    from advtrain import config as C

    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return {"tau": 0.9, "start": 1, "end": None}, "reference defaults, no config.yaml"
    av = C.resolve(C.load(path))["average"]
    return {"tau": av["tau"], "start": av["start"], "end": av["end"]}, f"{path} average:"


def average_run(run_dir: str, tau: float = 0.9, start: int = 1, end: Optional[int] = None,
                key: str = "model") -> str:
    """Average ``RUN_DIR/epoch_{start..end}.pt``; returns the path written."""
    if not os.path.isdir(run_dir):
        raise InputError(f"run directory {run_dir!r} not found; give the RUN_DIR of 'advtrain train'")
    if not 0.0 <= tau < 1.0:
        raise InputError(f"tau {tau} must be in [0, 1) (the reference uses 0.9)")
    epochs = available_epochs(run_dir)
    if not epochs:
        raise InputError(f"{run_dir!r} holds no epoch_<e>.pt checkpoints; train first")
    end = epochs[-1] if end is None else end
    have = set(epochs)  # the first five missing only: --end 10**12 must not list a range
    missing = list(itertools.islice((e for e in range(max(start, 1), end + 1) if e not in have), 5))
    if start < 1 or end < start or missing:
        raise InputError(f"cannot average epochs {start}..{end} of {run_dir!r}: available epochs "
                         f"{epochs[0]}..{epochs[-1]}" + (f", missing {missing}" if missing else ""))
    holder = {}

    def stream():
        for e in range(start, end + 1):
            ck = ckpt_io.load(ckpt_io.epoch_path(run_dir, e))
            if key not in ck:
                raise CheckpointError(f"{ckpt_io.epoch_path(run_dir, e)} has no {key!r} weights")
            holder["meta"] = {k: ck[k] for k in META_KEYS if k in ck}
            yield ck[key]

    labels = [ckpt_io.epoch_path(run_dir, e) for e in range(start, end + 1)]
    model = average_states(stream(), tau, labels=labels)
    out = average_path(run_dir, tau, start, end, key)
    payload = dict(holder["meta"], model=model, epoch=end,
                   average={"tau": float(tau), "start": start, "end": end, "source": key})
    ckpt_io.save(payload, out)
    return out
