"""A model against the protocol it is evaluated under, checked before anything runs (issue 23.3).

The dataset fixes the protocol: the threat models it has (``corruptions`` only where CIFAR-10-C /
CIFAR-100-C exist), its class count (10, 100, 1,000, or the class folders of an ImageFolder
``val/``) and its input size (32 px for CIFAR; an ImageFolder model's own ``image_size``). One
forward of one image at that size (cheap) shows whether the model takes it and how many class
scores it gives; a mismatch is one line naming both, instead of an ``IndexError`` deep in the
evaluation or a card of 0.00 / 0.00.
"""
from __future__ import annotations

from typing import Optional

import torch

from advtrain.data.names import DATASETS
from advtrain.errors import InputError

#: input side of the CIFAR datasets (ImageFolder datasets: the model's ``image_size``)
CIFAR_SIZE = 32
#: image side used when an ImageFolder model records none
FOLDER_DEFAULT_SIZE = 224


def check_threat_model(dataset: str, threat_model: str) -> None:
    """``corruptions`` exists for the datasets with a published corrupted test set only."""
    from advtrain.eval.cards import CORRUPTIONS
    from advtrain.eval.corruptions import FOLDERS

    if threat_model == CORRUPTIONS and dataset not in FOLDERS:
        raise InputError(f"--threat-model corruptions is defined for {', '.join(FOLDERS)} "
                         f"({', '.join(FOLDERS.values())}), not for --dataset {dataset}; use "
                         "--threat-model Linf or L2")


def protocol_classes(dataset: str, data_root=None) -> int:
    """The class count the protocol scores against: the dataset's, or for ``imagefolder`` the
    number of class folders of ``data_root/val``."""
    fixed = DATASETS[dataset]
    if fixed is not None:
        return fixed
    from advtrain.data.imagefolder import scan

    return len(scan(data_root, "test")[0])


def protocol_class_names(dataset: str, data_root=None) -> tuple:
    """``(class names in label order, where they come from)`` of a folder protocol: RobustBench's
    ImageNet wnids by label, or the class folders of ``data_root/val``."""
    import os

    from advtrain.data.imagefolder import imagenet_class_ids, scan

    if dataset == "imagenet":
        ids = imagenet_class_ids()
        return sorted(ids, key=ids.get), "RobustBench's ImageNet class map"
    return scan(data_root, "test")[0], os.path.join(os.fspath(data_root), "val")


def protocol_image_size(dataset: str, model: torch.nn.Module) -> int:
    """The input side the evaluation feeds ``model``."""
    if DATASETS[dataset] is None or dataset == "imagenet":
        return int(getattr(model, "image_size", None) or FOLDER_DEFAULT_SIZE)
    return CIFAR_SIZE


EVAL_FIX = "evaluate it under the dataset and image size it was trained for"


def check_model(model: torch.nn.Module, dataset: str, *, classes: int,
                image_size: Optional[int] = None, device="cpu", what: str = "the model",
                fix: str = EVAL_FIX) -> None:
    """One forward of one grey image of the protocol's size: the model must take it and give
    ``classes`` scores; else one line. The model's mode and weights are left as they were."""
    size = image_size or protocol_image_size(dataset, model)
    x = torch.full((1, 3, size, size), 0.5, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise InputError(f"{what} cannot take one {dataset} image of 3x{size}x{size} ({first}); "
                         f"{fix}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"{what} gives {shape} for one image, not one row of class scores; it is "
                         "not a classifier advtrain can evaluate")
    if out.shape[1] != classes:
        raise InputError(f"{what} gives {out.shape[1]} class scores but {dataset} is scored on "
                         f"{classes} classes; {fix}")
