"""Any ``timm.create_model`` architecture as an advtrain model: ``arch: "timm:<name>"``.

The timm network sits under ``.model`` behind an input normaliser whose mean/std are
``persistent=False`` buffers (as RobustBench's ``normalize_timm_model`` uses the model's own
``pretrained_cfg`` statistics), so inputs stay images in [0, 1] and the state_dict holds only
``model.*`` keys: the layout ``robustbench.utils.load_model(..., dataset="imagenet")`` rebuilds
(it strips and re-adds a ``model.`` prefix on ImageNet checkpoints).

``pretrained`` is always False: nothing is ever downloaded. A local weights file (``weights=PATH``,
config ``model.weights``) is read through the project's tensor-only loader and loaded strictly into
the timm network (a plain timm state_dict, or ours with ``model.`` keys).

Example::

    net = create_timm_model("timm:resnet10t", num_classes=10, image_size=64)
    net(torch.rand(2, 3, 64, 64)).shape      # (2, 10)
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from torch import nn

from advtrain.data.imagefolder import DEFAULT_IMAGE_SIZE
from advtrain.errors import InputError

#: prefix of registry names served by timm
PREFIX = "timm:"


def is_timm(name: object) -> bool:
    """True for ``"timm:<name>"`` registry names."""
    return isinstance(name, str) and name.strip().lower().startswith(PREFIX)


def timm_name(name: str) -> str:
    """``"timm:ConvNeXt_Tiny" -> "convnext_tiny"`` after checking that timm knows it."""
    import timm

    short = name.strip()[len(PREFIX):].strip().lower()
    if not short or not timm.is_model(short):
        import difflib

        close = difflib.get_close_matches(short, timm.list_models(), n=3, cutoff=0.75)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise InputError(f"unknown timm architecture {name!r}{hint}; give a timm.list_models() "
                         "name, e.g. timm:convnext_tiny")
    return short


class TimmClassifier(nn.Module):
    """``model((x - mean) / std)`` for a timm network ``model``; ``x`` in [0, 1]."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        # not in the state_dict: RobustBench rebuilds them from the architecture, as here
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def _build(short: str, num_classes: int, image_size: int) -> nn.Module:
    import timm

    try:  # ViT-like models size their position embeddings from img_size
        return timm.create_model(short, pretrained=False, num_classes=num_classes, img_size=image_size)
    except TypeError:  # CNNs take any size and refuse the argument
        return timm.create_model(short, pretrained=False, num_classes=num_classes)


def create_timm_model(name: str, *, num_classes: int, image_size: Optional[int] = None,
                      weights: Optional[str] = None) -> TimmClassifier:
    """Build ``timm:<name>`` with ``num_classes`` outputs for ``image_size`` px inputs."""
    short = timm_name(name)
    from advtrain.data.imagefolder import MAX_CLASSES, check_image_size

    size = check_image_size(DEFAULT_IMAGE_SIZE if image_size is None else image_size, "image_size")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or \
            not 1 <= num_classes <= MAX_CLASSES:
        raise InputError(f"num_classes = {str(num_classes)[:30]} must be an integer in [1, "
                         f"{MAX_CLASSES}]")
    net = _build(short, num_classes, size)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    model = TimmClassifier(net, cfg.get("mean", IMAGENET_DEFAULT_MEAN), cfg.get("std", IMAGENET_DEFAULT_STD))
    if weights is not None:
        load_timm_weights(model, weights)
    model.arch_name = PREFIX + short
    model.num_classes = num_classes
    model.image_size = size
    return model


def load_timm_weights(model: TimmClassifier, path: str) -> None:
    """Strictly load a local file (tensors only) into the timm network of ``model``."""
    from advtrain.models.convert import filter_state_dict, load_weights
    from advtrain.io.safeload import load_state_file

    state = filter_state_dict(load_state_file(path))  # unwraps a trainer checkpoint's "model"
    if state and all(isinstance(k, str) and k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items()}
    load_weights(model.model, state, strict=True, name=str(path))


def model_options(cfg) -> dict:
    """``create_model`` options of a config's timm model (image size, local weights); {} for others."""
    if not is_timm(cfg.model.arch):
        return {}
    from advtrain.data.imagefolder import image_size_of

    return {"image_size": image_size_of(cfg.data), "weights": cfg.model.weights}


def check_model_section(m) -> bool:
    """Validate ``model.arch``/``model.weights`` of a config; True when the arch is a timm model."""
    if not is_timm(m.arch):
        if m.weights is not None:
            raise InputError("config key 'model.weights' applies to timm:<name> architectures only; "
                             "remove it")
        return False
    timm_name(m.arch)  # an unknown name fails now, not after the data is built
    if m.weights is not None and not os.path.isfile(m.weights):
        raise InputError(f"model.weights {m.weights!r} is not a file; give a local .pt/.safetensors "
                         "state_dict (nothing is downloaded)")
    return True


def build_options(model: nn.Module) -> dict:
    """``create_model`` keyword arguments that rebuild ``model``'s architecture beyond its name
    (recorded beside an export so RobustBench can construct it); empty for the CIFAR zoo."""
    if not isinstance(model, TimmClassifier):
        return {}
    return {"num_classes": int(model.num_classes), "image_size": int(model.image_size)}


def recorded_options(ckpt) -> dict:
    """The same for a trainer checkpoint: its ``num_classes`` and ``config.data.image_size``."""
    if not is_timm(ckpt.get("arch")):
        return {}
    out = {"num_classes": ckpt.get("num_classes")}
    config = ckpt.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    if isinstance(data, dict) and isinstance(data.get("image_size"), int):
        out["image_size"] = data["image_size"]
    return {k: v for k, v in out.items() if isinstance(v, int) and not isinstance(v, bool)}


def probe_input(model: nn.Module, n: int = 2) -> torch.Tensor:
    """A fixed random batch of the model's input size (32 px for the CIFAR zoo)."""
    size = int(getattr(model, "image_size", 32))
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
