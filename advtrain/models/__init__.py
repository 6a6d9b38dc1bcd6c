"""Model zoo: RobustBench-layout architectures and a registry (see :mod:`advtrain.models.registry`).

Example::

    from advtrain.models import create_model, list_models
    model = create_model("wrn-34-10", dataset="cifar10")
"""
from __future__ import annotations

from advtrain.models.dm_wideresnet import DMWideResNet
from advtrain.models.flops import count_flops, forward_flops
from advtrain.models.preact_resnet import PreActResNet18
from advtrain.models.registry import (
    DATASETS,
    MODELS,
    DatasetInfo,
    ModelSpec,
    create_model,
    get_spec,
    list_models,
    model_names,
)
from advtrain.models.resnet import ResNet
from advtrain.models.wideresnet import WideResNet

__all__ = [
    "DATASETS", "MODELS", "DMWideResNet", "DatasetInfo", "ModelSpec", "PreActResNet18", "ResNet", "WideResNet",
    "count_flops", "create_model", "forward_flops", "get_spec", "list_models", "model_names",
]
