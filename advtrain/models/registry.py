"""The model zoo as data: registry name -> :class:`ModelSpec` (builder, kwargs, description).

Fixed names are listed in :data:`MODELS`; small WideResNets are parsed from the name:
``wrn-<depth>-<width>`` (RobustBench ``WideResNet`` keys, ReLU) and ``wrn-<depth>-<width>-silu``
(RobustBench ``DMWideResNet`` keys, SiLU, normalisation inside the model), any depth with
``(depth - 4) % 6 == 0``; and GradAlign's small CNN, ``cnn-<layers>x<filters>``
(:mod:`advtrain.models.small_cnn`, the model of the catastrophic-overfitting reproduction).
Inputs are always images in [0,1].

``num_classes`` comes from ``dataset`` (cifar10 -> 10, cifar100 -> 100) unless given; with neither,
10. Models that normalise internally take mean/std from ``dataset`` (or, without one, from the CIFAR
set with that many classes; or from explicit ``mean=``/``std=`` overrides).

Example::

    model = create_model("wrn-34-10", dataset="cifar100")        # RobustBench Cui2023Decoupled_WRN-34-10
    model = create_model("wrn-16-2-silu", dataset="cifar10")     # tiny DM-style WRN for tests
    model.arch_name                                              # 'wrn-16-2-silu'
"""
from __future__ import annotations

import fnmatch
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from torch import nn

from advtrain.data.facts import FactView
from advtrain.data.names import DATASETS as CLASSES
from advtrain.errors import InputError, unknown
from advtrain.models.dm_wideresnet import DMWideResNet
from advtrain.models.preact_resnet import PreActResNet18
from advtrain.models.resnet import LBGAT_STRIDES, ResNet
from advtrain.models.small_cnn import SmallCNN
from advtrain.models.timm_models import create_timm_model, is_timm
from advtrain.models.wideresnet import WideResNet


@dataclass(frozen=True)
class DatasetInfo:
    """Number of classes and per-channel statistics of a dataset (images in [0,1])."""

    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


#: the datasets with per-channel statistics (for models that normalise inside): a live view of the
#: rows of :data:`advtrain.data.facts.FACTS` that have them
DATASETS = FactView(lambda row: DatasetInfo(row.classes, row.mean, row.std),
                    keep=lambda row: row.mean is not None and row.classes is not None)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registry entry; ``normalizes`` = the builder takes dataset ``mean``/``std``."""

    builder: Callable[..., nn.Module]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    normalizes: bool = False


def _wrn(depth: int, width: int) -> ModelSpec:
    return ModelSpec(WideResNet, {"depth": depth, "widen_factor": width},
                     f"WRN-{depth}-{width}, ReLU, TRADES/RobustBench WideResNet keys")


def _wrn_silu(depth: int, width: int) -> ModelSpec:
    return ModelSpec(DMWideResNet, {"depth": depth, "width": width, "activation_fn": nn.SiLU},
                     f"WRN-{depth}-{width}, SiLU, in-model normalisation, RobustBench DMWideResNet keys",
                     normalizes=True)


MODELS: dict[str, ModelSpec] = {
    "wrn-34-10": _wrn(34, 10),
    "wrn-34-20": _wrn(34, 20),
    "wrn-28-10": _wrn(28, 10),
    "wrn-28-10-silu": _wrn_silu(28, 10),
    "preact-resnet-18": ModelSpec(PreActResNet18, {}, "PreAct ResNet-18 (Rice et al. / AWP layout)"),
    "resnet-18": ModelSpec(ResNet, {"num_blocks": (2, 2, 2, 2), "strides": LBGAT_STRIDES},
                           "CIFAR ResNet-18, LBGAT's natural model ResNet18_cifar (strides 1/1/2/2)"),
}

_WRN_NAME = re.compile(r"^wrn-(\d+)-(\d+)(-silu)?$")
_CNN_NAME = re.compile(r"^cnn-(\d+)x(\d+)$")
_PATTERNS = ("wrn-<depth>-<width>", "wrn-<depth>-<width>-silu", "cnn-<layers>x<filters>")


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registry names, optionally filtered by a shell pattern (``'wrn-*'``).

    Parsed WideResNet names (``wrn-16-2`` ...) are accepted by :func:`create_model` but not listed.
    """
    names = sorted(MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


model_names = list_models


def get_spec(name: str, kind: str = "model") -> ModelSpec:
    """The :class:`ModelSpec` of ``name`` (a fixed name, a parsed ``wrn-D-W[-silu]`` or ``cnn-LxF``);
    an unknown name raises "unknown <kind> ..." (a config says which key it checks)."""
    key = str(name).strip().lower()
    if key in MODELS:
        return MODELS[key]
    cnn = _CNN_NAME.match(key)
    if cnn is not None:
        layers, filters = int(cnn.group(1)), int(cnn.group(2))
        if layers < 1 or filters < 1:
            raise InputError(f"invalid model {name!r}: cnn-<layers>x<filters> needs layers >= 1 and "
                             "filters >= 1; e.g. 'cnn-1x16'")
        return ModelSpec(SmallCNN, {"layers": layers, "filters": filters},
                         f"GradAlign's CNN: {layers} conv layer(s) of {filters} 3x3 filters + ReLU, "
                         "linear head (32x32 inputs)")
    match = _WRN_NAME.match(key)
    if match is None:
        raise unknown(kind, name, [*MODELS, *_PATTERNS])
    depth, width = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 != 0 or width < 1:
        raise InputError(f"invalid model {name!r}: WideResNet depth must satisfy (depth-4) % 6 == 0 and "
                         f"depth >= 10 (10, 16, 22, 28, 34, ...), width >= 1; e.g. 'wrn-16-2'")
    return _wrn_silu(depth, width) if match.group(3) else _wrn(depth, width)


def create_model(name: str, *, dataset: str | None = None, num_classes: int | None = None,
                 **overrides: Any) -> nn.Module:
    """Build registry model ``name`` for ``dataset``/``num_classes``; ``overrides`` go to the builder.

    The model gets ``arch_name`` (canonical registry name) and ``num_classes`` attributes.
    Raises :class:`UnknownNameError` for an unknown name or dataset and :class:`InputError` for an
    inconsistent ``num_classes``, an invalid WRN depth or an override the builder does not take.
    ``timm:<name>`` builds a timm model (:mod:`advtrain.models.timm_models`; overrides
    ``image_size``, ``weights``, ``new_head``, ``drop_path``, ``conv_stem``, ``normalize``).
    """
    if is_timm(name):
        return _create_timm(name, dataset, num_classes, overrides)
    spec = get_spec(name)
    info = _dataset_info(dataset)
    n = _num_classes(info, num_classes, dataset)
    kwargs = {**spec.kwargs, "num_classes": n}
    if spec.normalizes and not {"mean", "std"} <= set(overrides):
        stats = info or _stats_for(n, name)
        kwargs.update(mean=stats.mean, std=stats.std)
    _check_overrides(name, spec, overrides)
    model = spec.builder(**{**kwargs, **overrides})
    model.arch_name = str(name).strip().lower()
    model.num_classes = n
    return model


def _create_timm(name: str, dataset: Optional[str], num_classes: Optional[int],
                 overrides: Mapping[str, Any]) -> nn.Module:
    bad = sorted(set(overrides) - {"image_size", "weights", "new_head", "drop_path", "conv_stem",
                                     "normalize"})
    if bad:
        raise InputError(f"model {name!r} does not take option(s) {', '.join(bad)}; valid options: "
                         "image_size, weights, new_head, drop_path, conv_stem, normalize")
    if num_classes is None:
        num_classes = CLASSES.get(str(dataset or "").strip().lower())  # the facts table's counts
        if num_classes is None:
            raise InputError(f"model {name!r} on dataset {dataset!r} needs num_classes (config "
                             "data.num_classes)")
    n = _num_classes(_dataset_info(dataset), num_classes, dataset)
    return create_timm_model(name, num_classes=n, **overrides)


def _dataset_info(dataset: str | None) -> DatasetInfo | None:
    if dataset is None:
        return None
    key = str(dataset).strip().lower()
    from advtrain.data.imagefolder import is_folder_dataset

    if is_folder_dataset(key):  # ImageFolder data: classes from num_classes, no CIFAR statistics
        return None
    if key not in DATASETS:
        raise unknown("dataset", dataset, DATASETS)
    return DATASETS[key]


def _num_classes(info: DatasetInfo | None, num_classes: int | None, dataset: str | None) -> int:
    if num_classes is None:
        return info.num_classes if info else 10
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
    if info is not None and num_classes != info.num_classes:
        raise InputError(f"num_classes={num_classes} contradicts dataset {dataset!r} ({info.num_classes} classes); "
                         "drop num_classes or pass the matching dataset")
    return num_classes


def _stats_for(num_classes: int, name: str) -> DatasetInfo:
    """Normalisation statistics without a dataset: the CIFAR set with that many classes."""
    for info in DATASETS.values():
        if info.num_classes == num_classes:
            return info
    raise InputError(f"model {name!r} normalises inputs inside the model: pass dataset= "
                     f"({', '.join(DATASETS)}) or mean=(...) and std=(...)")


def _check_overrides(name: str, spec: ModelSpec, overrides: Mapping[str, Any]) -> None:
    # the architecture-defining kwargs are fixed by the name, so arch_name stays truthful
    allowed = set(inspect.signature(spec.builder).parameters) - {"num_classes", *spec.kwargs}
    bad = sorted(set(overrides) - allowed)
    if bad:
        raise InputError(f"model {name!r} does not take option(s) {', '.join(bad)}; "
                         f"valid options: {', '.join(sorted(allowed))}")
