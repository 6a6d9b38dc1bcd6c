"""Foreign checkpoint formats -> our state_dict keys (SPEC §8), and the checked copy into a model.

:func:`filter_state_dict` converts reference checkpoint formats: ``state_dict`` / ``model_state_dict``
/ ``model`` wrappers, ``module.0.`` / ``module.`` prefixes, ``sub_block`` keys. :func:`load_weights`
checks keys, shapes and dtypes *before* copying and fails with one line naming them.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

from advtrain.errors import CheckpointError
from advtrain.io.safeload import check_tensors, load_state_file

__all__ = ["check_fits", "filter_state_dict", "load_weights", "build_skeleton", "is_skeleton"]

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_SHOW = 3  # how many offending keys a mismatch message lists per category


def build_skeleton(build) -> nn.Module:
    """``build()`` on the meta device (names, shapes, dtypes, no memory) for the checks made before
    a model is built for real. A constructor that computes with its tensors while it builds (timm's
    ConvNeXt and ViT read their drop-path rates with ``.item()`` / ``.tolist()``, which a meta
    tensor cannot give) is built on the CPU instead, under a forked RNG so that, as on the meta
    device, the check draws nothing from the global generator; :func:`is_skeleton` tells the two
    apart (a CPU build can be loaded and used as it is)."""
    try:
        with torch.device("meta"):
            return build()
    except (RuntimeError, NotImplementedError) as e:
        if "meta" not in str(e):
            raise
    with torch.random.fork_rng(devices=[]):
        return build()


def is_skeleton(model: nn.Module) -> bool:
    """True for a meta-device model of :func:`build_skeleton` (no data: build it for real)."""
    return any(t.is_meta for t in model.parameters()) or any(t.is_meta for t in model.buffers())


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


def load_weights(model: nn.Module, source, *, strict: bool = True, name: str | None = None,
                 new: tuple = ()) -> nn.Module:
    """Load ``source`` (a path or a dict) into ``model`` after checking keys and shapes; returns ``model``.

    With ``strict=True`` any missing/unexpected key or shape mismatch raises one-line
    :class:`CheckpointError`; with ``strict=False`` only shape mismatches are fatal. Keys named in
    ``new`` (a new classifier head when fine-tuning) are left out of the file and keep the
    model's initial values; every other key is checked as ``strict`` says.
    """
    if name is None:  # how the message names a dict source (e.g. the file it was read from)
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "checkpoint"
    raw = load_state_file(source) if isinstance(source, (str, os.PathLike)) else source
    sd = check_fits(model, raw, strict=strict, name=name, new=new)
    if new:
        own = model.state_dict()
        sd = {**{k: own[k] for k in new}, **sd}
    model.load_state_dict(sd, strict=strict)
    return model


def check_fits(model: nn.Module, raw: Mapping[str, Any], *, strict: bool = True,
               name: str = "checkpoint", new: tuple = ()) -> dict[str, torch.Tensor]:
    """The filtered state_dict of ``raw`` if it fits ``model`` (keys, shapes, float dtypes), else a
    one-line :class:`CheckpointError`. ``model`` may live on the meta device: nothing is copied.
    Keys in ``new`` are dropped from ``raw`` first (the model keeps its own)."""
    own = model.state_dict()
    sd = filter_state_dict(raw, own.keys())
    sd = {k: v for k, v in sd.items() if k not in set(new)}
    own = {k: v for k, v in own.items() if k not in set(new)}
    problem = _mismatch(sd, own, strict)
    if problem:
        raise CheckpointError(f"{name}: does not fit {_arch(model)}: {problem}; wrong --arch or --dataset/num_classes?")
    check_tensors(sd, name, reference=own)
    return sd


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
