"""The resumable state file of :class:`attacks.AutoAttackAdapter`: what it holds and when it is refused.

After each attack the adapter records the finished attacks, their accuracies and timings, the clean
and robust flags, the adversarial labels and the changed examples (tensors, lists, numbers only, so
``torch.load(weights_only=True)`` reads it). The file carries a *key*: every setting that changes
the attacks' outcome plus what the caller binds it to (weights and data digests); a later run with
another key is refused (:class:`AttackStateError`) naming the settings that differ. Reading and
writing go through callables the caller hands in (defaults: ``torch.load(weights_only=True)`` and
a write-then-rename ``torch.save``), so a trainer can apply its own safe loader and atomic writer.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import Tensor

from .base import AttackError

STATE_FORMAT = "advtrain-autoattack-state-3"  # 3: bound to the attack budget too (issue 16.3)


class AttackStateError(AttackError):
    """A state file that belongs to another evaluation, or is not a state file."""


def torch_load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def torch_save(obj, path) -> None:
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def check_state_key(path, saved: dict, key: dict) -> None:
    """Refuse a state file whose key differs from ``key``, naming the settings that differ."""
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT \
            or not isinstance(saved.get("key"), dict):
        raise AttackStateError(f"{path}: not an AutoAttack state file of this version; delete it "
                               "or pass another state path")
    differ = [k for k in sorted(set(key) | set(saved["key"])) if saved["key"].get(k) != key.get(k)]
    if differ:
        raise AttackStateError(f"{path}: state of another evaluation (different "
                               f"{', '.join(differ)}); delete it or pass another state path")


def pack_state(state: dict, x: Tensor, key: dict) -> dict:
    """The adapter's running state as a file payload (only the changed examples are stored)."""
    hit = (state["x_adv"] != x).reshape(x.shape[0], -1).any(1).nonzero().flatten()
    return {"format": STATE_FORMAT, "key": key, "done": list(state["per_attack"]),
            "accuracy": list(state["per_attack"].values()), "seconds": dict(state["seconds"]),
            "checks": list(state["checks"]), "clean": state["clean"].cpu(),
            "robust": state["robust"].cpu(), "y_adv": state["y_adv"].cpu(), "changed": hit.cpu(),
            "x_changed": state["x_adv"][hit].cpu()}


def unpack_state(saved: dict, x: Tensor, y: Tensor) -> dict:
    """The running state back from a (key-checked) payload, on the devices of ``x`` and ``y``."""
    x_adv = x.clone()
    x_adv[saved["changed"].to(x.device)] = saved["x_changed"].to(x.device, x.dtype)
    return {"x_adv": x_adv, "y_adv": saved["y_adv"].to(y.device),
            "clean": saved["clean"].to(y.device), "robust": saved["robust"].to(y.device),
            "per_attack": OrderedDict(zip(saved["done"], saved["accuracy"])),
            "seconds": dict(saved["seconds"]), "checks": list(saved["checks"])}
