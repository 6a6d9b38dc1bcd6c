"""Dataset names, class counts and the per-channel statistics used by models that normalise inside.

Inputs everywhere in advtrain are images in [0, 1]; normalisation ``(x - mean) / std`` happens inside a
model when its recipe needs it (e.g. the DeepMind WRN-28-10-SiLU, SPEC §8), using these constants.
"""
from __future__ import annotations

from advtrain.errors import InputError, unknown

#: dataset name -> number of classes (None: an ImageFolder tree whose count is data.num_classes,
#: see :mod:`advtrain.data.imagefolder`)
DATASETS = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "imagefolder": None}

#: splits every source provides
SPLITS = ("train", "test")

#: per-channel RGB mean of the training set (SPEC §8)
DATASET_MEAN = {
    "cifar10": (0.4914, 0.4822, 0.4465),
    "cifar100": (0.5071, 0.4865, 0.4409),
}

#: per-channel RGB standard deviation of the training set (SPEC §8)
DATASET_STD = {
    "cifar10": (0.2471, 0.2435, 0.2616),
    "cifar100": (0.2673, 0.2564, 0.2762),
}


def check_dataset(dataset: str) -> str:
    """Return ``dataset`` if it is a known name, else raise the standard unknown-name error."""
    if dataset not in DATASETS:
        raise unknown("dataset", dataset, DATASETS)
    return dataset


def check_split(split: str) -> str:
    """Return ``split`` if it is 'train' or 'test', else raise the standard unknown-name error."""
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    return split


def num_classes(dataset: str, given: "int | None" = None) -> int:
    """Number of classes of ``dataset`` ('cifar10' -> 10, 'cifar100' -> 100); ``imagefolder`` takes
    ``given`` (config ``data.num_classes``)."""
    fixed = DATASETS[check_dataset(dataset)]
    if fixed is None and given is None:
        raise InputError(f"dataset {dataset} needs its number of classes (config data.num_classes)")
    return fixed if fixed is not None else int(given)
