"""Any ``timm.create_model`` architecture as an advtrain model: ``arch: "timm:<name>"``.

The timm network sits under ``.model`` behind an input normaliser whose mean/std are
``persistent=False`` buffers (as RobustBench's ``normalize_timm_model`` uses the model's own
``pretrained_cfg`` statistics), so inputs stay images in [0, 1] and the state_dict holds only
``model.*`` keys: the layout ``robustbench.utils.load_model(..., dataset="imagenet")`` rebuilds
(it strips and re-adds a ``model.`` prefix on ImageNet checkpoints).

``pretrained`` is always False: nothing is ever downloaded. A local weights file (``weights=PATH``,
config ``model.weights``) is read through the project's tensor-only loader and loaded strictly into
the timm network (a plain timm state_dict, or ours with ``model.`` keys); with ``model.new_head``
(fine-tuning) the classifier head's keys are left out and named in one line.

Example::

    net = create_timm_model("timm:resnet10t", num_classes=10, image_size=64)
    net(torch.rand(2, 3, 64, 64)).shape      # (2, 10)
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from advtrain.data.imagefolder import DEFAULT_IMAGE_SIZE
from advtrain.errors import CheckpointError, InputError

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


def _build(short: str, num_classes: int, image_size: int, drop_path: float = 0.0) -> nn.Module:
    import timm

    extra = {"drop_path_rate": drop_path} if drop_path else {}
    try:  # ViT-like models size their position embeddings from img_size
        return timm.create_model(short, pretrained=False, num_classes=num_classes, img_size=image_size,
                                 **extra)
    except TypeError:  # CNNs take any size and refuse the argument
        try:
            return timm.create_model(short, pretrained=False, num_classes=num_classes, **extra)
        except TypeError:
            raise InputError(f"timm model {short!r} has no drop-path (stochastic depth); remove "
                             "model.drop_path") from None


def create_timm_model(name: str, *, num_classes: int, image_size: Optional[int] = None,
                      weights: Optional[str] = None, new_head: bool = False,
                      drop_path: float = 0.0, conv_stem: bool = False,
                      normalize: bool = True) -> TimmClassifier:
    """Build ``timm:<name>`` with ``num_classes`` outputs for ``image_size`` px inputs; ``conv_stem``:
    revisiting-at's ConvStem in place of the patchify stem (:mod:`advtrain.models.conv_stem`);
    ``normalize`` False: mean 0, std 1, the network sees the [0, 1] pixels (revisiting-at's
    ``model.add_normalization 0``)."""
    short = timm_name(name)
    from advtrain.data.imagefolder import MAX_CLASSES, check_image_size

    size = check_image_size(DEFAULT_IMAGE_SIZE if image_size is None else image_size, "image_size")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or \
            not 1 <= num_classes <= MAX_CLASSES:
        raise InputError(f"num_classes = {str(num_classes)[:30]} must be an integer in [1, "
                         f"{MAX_CLASSES}]")
    net = _build(short, num_classes, size, drop_path)
    for key, value in (("conv_stem", conv_stem), ("normalize", normalize)):
        if not isinstance(value, bool):
            raise InputError(f"{key} = {value!r} must be true or false")
    if conv_stem:
        from advtrain.models.conv_stem import add_conv_stem

        add_conv_stem(net, short)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    if normalize:
        model = TimmClassifier(net, cfg.get("mean", IMAGENET_DEFAULT_MEAN), cfg.get("std", IMAGENET_DEFAULT_STD))
    else:
        model = TimmClassifier(net, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    if weights is not None:
        load_timm_weights(model, weights, new_head=new_head)
    model.arch_name = PREFIX + short
    model.conv_stem, model.normalize = conv_stem, normalize
    model.num_classes = num_classes
    model.image_size = size
    return model


def head_keys(net: nn.Module) -> tuple:
    """State-dict keys of a timm network's classifier head (``get_classifier()``), e.g.
    ``("fc.weight", "fc.bias")`` for a ResNet, ``("head.fc.weight", ...)`` for a ConvNeXt."""
    head = net.get_classifier() if hasattr(net, "get_classifier") else None
    if not isinstance(head, nn.Module):
        return ()
    ids = {id(t) for t in list(head.parameters()) + list(head.buffers())}
    own = net.state_dict(keep_vars=True)
    return tuple(k for k, t in own.items() if id(t) in ids)


def load_timm_weights(model: TimmClassifier, path: str, new_head: bool = False) -> Optional[str]:
    """Strictly load a local file (tensors only) into the timm network of ``model``.

    ``new_head`` (fine-tuning, config ``model.new_head``): the classifier head's keys are left
    out and keep their fresh initialisation (a 1,000-class checkpoint into a 10-class model);
    every other key must fit. Returns the one line that names what was left out (None otherwise),
    which the trainer prints."""
    from advtrain.models.convert import filter_state_dict, load_weights
    from advtrain.io.safeload import load_state_file

    state = filter_state_dict(load_state_file(path))  # unwraps a trainer checkpoint's "model"
    if state and all(isinstance(k, str) and k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items()}
    keys = head_keys(model.model) if new_head else ()
    if new_head and not keys:
        raise InputError(f"model.new_head: {model.model.__class__.__name__} has no get_classifier() "
                         "head to replace; remove model.new_head")
    try:
        load_weights(model.model, with_bn_counters(state), strict=True, name=str(path), new=keys)
    except CheckpointError as e:
        own = model.model.state_dict()
        head = head_keys(model.model)
        if not new_head and any(k in state and state[k].shape != own[k].shape for k in head):
            raise CheckpointError(f"{e}; to fine-tune with a new classifier head set "
                                  "model.new_head: true") from None
        raise
    if not new_head:
        return None
    own = model.model.state_dict()
    shown = ", ".join(f"{k} {tuple(state[k].shape)}->{tuple(own[k].shape)}" if k in state
                      else f"{k} (not in the file)" for k in keys)
    line = f"model.weights {path}: backbone loaded; new head, left out: {shown}"
    model.weights_note = line
    return line


def with_bn_counters(state: Dict[str, Any]) -> Dict[str, Any]:
    """``state`` with a 0 ``num_batches_tracked`` for every BatchNorm that lacks one (torchvision's
    first ImageNet weights, e.g. ``resnet34-333f7ec4.pth``, predate the counter; torch's own
    ``load_state_dict`` fills it in the same way). Nothing else changes."""
    extra = {}
    for key in state:
        if isinstance(key, str) and key.endswith(".running_var"):
            counter = key[:-len("running_var")] + "num_batches_tracked"
            if counter not in state:
                extra[counter] = torch.tensor(0, dtype=torch.long)
    return {**state, **extra} if extra else state


def as_classifier_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """A state_dict of a bare timm network (timm's or torchvision's ImageNet weights, keys
    ``conv1.weight``...) as one of :class:`TimmClassifier` (``model.conv1.weight``...); a
    classifier's own state (every key under ``model.``) passes through unchanged."""
    from advtrain.models.convert import filter_state_dict

    state = filter_state_dict(state)  # unwraps state_dict / model, strips module.
    if state and all(isinstance(k, str) and k.startswith("model.") for k in state):
        return state
    return with_bn_counters({f"model.{k}": v for k, v in state.items()})


def model_options(cfg) -> dict:
    """``create_model`` options of a config's timm model (image size, local weights); {} for others."""
    if not is_timm(cfg.model.arch):
        return {}
    from advtrain.data.imagefolder import image_size_of

    out = {"image_size": image_size_of(cfg.data), "weights": cfg.model.weights}
    if cfg.model.new_head:
        out["new_head"] = True
    if cfg.model.drop_path:
        out["drop_path"] = cfg.model.drop_path
    if cfg.model.conv_stem:
        out["conv_stem"] = True
    if not cfg.model.normalize:
        out["normalize"] = False
    return out


def check_model_section(m) -> bool:
    """Validate ``model.arch``/``model.weights`` of a config; True when the arch is a timm model."""
    if not 0 <= m.drop_path < 1:
        raise InputError(f"config key 'model.drop_path' = {m.drop_path} must be in [0, 1)")
    if not is_timm(m.arch):
        if m.weights is not None or m.new_head or m.drop_path or m.conv_stem or not m.normalize:
            key = ("model.weights" if m.weights is not None else "model.new_head" if m.new_head else
                   "model.drop_path" if m.drop_path else "model.conv_stem" if m.conv_stem else
                   "model.normalize")
            raise InputError(f"config key {key!r} applies to timm:<name> architectures only; "
                             "remove it")
        return False
    if m.new_head and m.weights is None:
        raise InputError("model.new_head replaces the classifier of model.weights; give model.weights "
                         "(a local file) or remove model.new_head")
    short = timm_name(m.arch)  # an unknown name fails now, not after the data is built
    if m.conv_stem:  # the model family now; the patch size and widths when it is built
        from advtrain.models.conv_stem import check_conv_stem_family

        check_conv_stem_family(short)
    if m.weights is not None and not os.path.isfile(m.weights):
        raise InputError(f"model.weights {m.weights!r} is not a file; give a local .pt/.safetensors "
                         "state_dict (nothing is downloaded)")
    return True


def build_options(model: nn.Module) -> dict:
    """``create_model`` keyword arguments that rebuild ``model``'s architecture beyond its name
    (recorded beside an export so RobustBench can construct it); empty for the CIFAR zoo."""
    if not isinstance(model, TimmClassifier):
        return {}
    out = {"num_classes": int(model.num_classes), "image_size": int(model.image_size)}
    if getattr(model, "conv_stem", False):
        out["conv_stem"] = True
    if getattr(model, "normalize", True) is False:
        out["normalize"] = False
    return out


def recorded_options(ckpt) -> dict:
    """The same for a trainer checkpoint: its ``num_classes`` and ``config.data.image_size``."""
    if not is_timm(ckpt.get("arch")):
        return {}
    out = {"num_classes": ckpt.get("num_classes")}
    config = ckpt.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    if isinstance(data, dict) and isinstance(data.get("image_size"), int):
        out["image_size"] = data["image_size"]
    out = {k: v for k, v in out.items() if isinstance(v, int) and not isinstance(v, bool)}
    model = config.get("model") if isinstance(config, dict) else None
    if isinstance(model, dict) and model.get("conv_stem") is True:
        out["conv_stem"] = True
    if isinstance(model, dict) and model.get("normalize") is False:
        out["normalize"] = False
    return out


def probe_input(model: nn.Module, n: int = 2) -> torch.Tensor:
    """A fixed random batch of the model's input size (32 px for the CIFAR zoo)."""
    size = int(getattr(model, "image_size", 32))
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
