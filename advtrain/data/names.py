"""Dataset names, class counts and the per-channel statistics used by models that normalise inside
(views of the one table :data:`advtrain.data.facts.FACTS`).

Inputs everywhere in advtrain are images in [0, 1]; normalisation ``(x - mean) / std`` happens inside a
model when its recipe needs it (e.g. the DeepMind WRN-28-10-SiLU, SPEC §8), using these constants.
"""
from __future__ import annotations

from advtrain.data.facts import FactView, facts
from advtrain.errors import InputError, unknown

#: dataset name -> number of classes (None: an ImageFolder tree whose count is data.num_classes,
#: see :mod:`advtrain.data.imagefolder`); a live view of :data:`advtrain.data.facts.FACTS`
DATASETS = FactView(lambda row: row.classes)

#: splits every source provides
SPLITS = ("train", "test")

#: per-channel RGB mean of the training set (SPEC §8); live view of the rows that have one
DATASET_MEAN = FactView(lambda row: row.mean, keep=lambda row: row.mean is not None)

#: per-channel RGB standard deviation of the training set (SPEC §8); live view as above
DATASET_STD = FactView(lambda row: row.std, keep=lambda row: row.std is not None)


def check_dataset(dataset: str) -> str:
    """Return ``dataset`` if it is a known name, else raise the standard unknown-name error."""
    facts(dataset)  # unknown -> the standard error naming every row
    return dataset


def check_split(split: str) -> str:
    """Return ``split`` if it is 'train' or 'test', else raise the standard unknown-name error."""
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    return split


def num_classes(dataset: str, given: "int | None" = None) -> int:
    """Number of classes of ``dataset`` ('cifar10' -> 10, 'cifar100' -> 100); ``imagefolder`` takes
    ``given`` (config ``data.num_classes``)."""
    fixed = facts(dataset).classes
    if fixed is None and given is None:
        raise InputError(f"dataset {dataset} needs its number of classes (config data.num_classes)")
    return fixed if fixed is not None else int(given)
