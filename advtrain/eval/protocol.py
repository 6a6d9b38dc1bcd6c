"""A model against the protocol it is evaluated under, checked before anything runs (issue 23.3).

The dataset's facts row (:data:`advtrain.data.facts.FACTS`) fixes the protocol: its class count
(10, 100, 1,000, or the class folders of an ImageFolder ``val/``) and its input size (the row's
``image_size``: 32 px for CIFAR; for ImageFolder data the model's own ``image_size``). Whether
the threat model exists for the dataset is :func:`advtrain.eval.corruptions.folder_name`'s. One
forward of one image at that size (cheap) shows whether the model takes it and how many class
scores it gives; a mismatch is one line naming both, instead of an ``IndexError`` deep in the
evaluation or a card of 0.00 / 0.00.
"""
from __future__ import annotations

from typing import Optional

import torch

from advtrain.data.facts import facts
from advtrain.errors import InputError


def protocol_classes(dataset: str, data_root=None) -> int:
    """The class count the protocol scores against: the dataset's, or for ``imagefolder`` the
    number of class folders of ``data_root/val``."""
    fixed = facts(dataset).classes
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
    """The input side the evaluation feeds ``model``: the facts row's, or for ImageFolder data
    the size the model was built for (the evaluation resizes to it)."""
    row = facts(dataset)
    if row.is_folder:
        return int(getattr(model, "image_size", None) or row.image_size)
    return row.image_size


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


def check_loaded(model: torch.nn.Module, dataset: str, *, what: str, recorded_classes=None,
                 data_root=None, device="cpu", fix: str = EVAL_FIX) -> None:
    """A loaded model against the protocol of ``dataset``, before anything runs or is written
    (``eval`` and ``export``): class count and input size by :func:`check_model`, and for a folder
    protocol the class names the checkpoint recorded (label order) against the protocol's."""
    from advtrain.data.imagefolder import check_classes, is_folder_dataset

    check_model(model, dataset, classes=protocol_classes(dataset, data_root), device=device,
                what=what, fix=fix)
    if recorded_classes is not None and is_folder_dataset(dataset):
        names, where = protocol_class_names(dataset, data_root)
        check_classes(recorded_classes, names, where, what)
