"""The one table of dataset facts: every consumer (loaders, model registry, eval defaults, cards,
the RobustBench zoo, corruptions) reads :data:`FACTS`; adding a dataset is one row.

A row (:class:`DatasetFacts`) holds

- ``classes``: the class count (None: an ImageFolder tree, counted by config ``data.num_classes``);
- ``mean`` / ``std``: per-channel RGB statistics of the training set (SPEC §8), for models that
  normalise inside (None: no statistics, e.g. ImageFolder data);
- ``test_images``: the size of the evaluation protocol's test set -- a card on fewer images is
  partial (CIFAR: the 10,000 test images; ImageNet: RobustBench's 5,000-image list; None: the whole
  folder is the protocol);
- ``eps``: the default radius of ``advtrain eval`` per threat model (RobustBench's: CIFAR Linf
  8/255, L2 0.5; ImageNet Linf 4/255; L1, which RobustBench does not rank: CIFAR 12, ImageNet 75);
  a threat model missing here needs ``--eps``;
- ``sources``: where its images can come from (:data:`SOURCE_KINDS`), with the on-disk layout of
  the CIFAR releases (``binary``, ``torchvision``);
- ``robustbench``: RobustBench's ``BenchmarkDataset`` value (None: not a RobustBench dataset: no
  zoo models, no exports);
- ``image_size``: the image side (ImageFolder datasets: the default of ``data.image_size``);
- ``corruptions``: the folder of its common-corruptions release (``CIFAR-10-C``), if any.

The other modules' names (``names.DATASETS``, ``DATASET_MEAN``/``STD``) are live views of this
table, so a row added at run time (a test's ``monkeypatch.setitem(FACTS, ...)``) reaches them all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Dict, Mapping, Optional, Tuple

from advtrain.errors import unknown

#: every kind of source a row may name (:mod:`advtrain.data.sources`, :mod:`advtrain.data.imagefolder`)
SOURCE_KINDS = ("torchvision", "binary", "npz", "imagefolder")


@dataclass(frozen=True)
class BinaryLayout:
    """The official CIFAR binary release: ``folder/<files>``, records of label byte(s) + 3072 bytes."""

    folder: str
    files: Mapping[str, Tuple[str, ...]]  # split -> file names
    label_bytes: int
    label_index: int  # which of the label bytes is the class


@dataclass(frozen=True)
class TorchvisionLayout:
    """torchvision's dataset class and the folder/archive/files it reads (md5-checked batches)."""

    cls: str  # torchvision.datasets attribute, e.g. "CIFAR10"
    folder: str
    archive: str
    files: Mapping[str, Tuple[str, ...]]  # split -> file names inside ``folder``


@dataclass(frozen=True)
class DatasetFacts:
    """One dataset's facts (see the module docstring)."""

    name: str
    classes: Optional[int]
    image_size: int
    sources: Tuple[str, ...]
    test_images: Optional[int] = None
    eps: Mapping[str, str] = field(default_factory=dict)
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None
    robustbench: Optional[str] = None
    binary: Optional[BinaryLayout] = None
    torchvision: Optional[TorchvisionLayout] = None
    corruptions: Optional[str] = None

    def __post_init__(self):
        bad = [k for k in self.sources if k not in SOURCE_KINDS]
        if bad:
            raise ValueError(f"dataset row {self.name}: unknown source kind(s) {bad}; "
                             f"choose from {SOURCE_KINDS}")
        if ("binary" in self.sources) != (self.binary is not None) or \
                ("torchvision" in self.sources) != (self.torchvision is not None):
            raise ValueError(f"dataset row {self.name}: a binary/torchvision source needs its layout")
        object.__setattr__(self, "eps", MappingProxyType(dict(self.eps)))

    @property
    def is_folder(self) -> bool:
        """Read from an ImageFolder tree (``DIR/train/<class>/``, ``DIR/val/<class>/``)."""
        return "imagefolder" in self.sources


def _cifar_files(n_train: int, train: str, test: str) -> Dict[str, Tuple[str, ...]]:
    if n_train == 1:
        return {"train": (train,), "test": (test,)}
    return {"train": tuple(train.format(i) for i in range(1, n_train + 1)), "test": (test,)}


#: RobustBench's CIFAR leaderboards (Linf, L2); L1 (RobustBench has none) 12: Croce & Hein's CIFAR-10
#: L1 radius ("Mind the box", ICML 2021; fra31/robust-finetuning train.py:24 eps_dict), used for
#: CIFAR-100 too (same image size)
_CIFAR_EPS = {"Linf": "8/255", "L2": "0.5", "L1": "12"}
#: RobustBench's ImageNet leaderboard (it has no L2 and no L1 one); L1 75: revisiting-at's ImageNet
#: evaluation (nmndeep/revisiting-at AA_eval.py:33 eps_dict)
_IMAGENET_EPS = {"Linf": "4/255", "L1": "75"}

#: THE table: dataset name -> facts
FACTS: Dict[str, DatasetFacts] = {
    "cifar10": DatasetFacts(
        name="cifar10", classes=10, image_size=32, test_images=10000, eps=_CIFAR_EPS,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616),
        sources=("npz", "binary", "torchvision"), robustbench="cifar10",
        binary=BinaryLayout("cifar-10-batches-bin",
                            _cifar_files(5, "data_batch_{}.bin", "test_batch.bin"), 1, 0),
        torchvision=TorchvisionLayout("CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                                      _cifar_files(5, "data_batch_{}", "test_batch")),
        corruptions="CIFAR-10-C"),
    "cifar100": DatasetFacts(
        name="cifar100", classes=100, image_size=32, test_images=10000, eps=_CIFAR_EPS,
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        sources=("npz", "binary", "torchvision"), robustbench="cifar100",
        binary=BinaryLayout("cifar-100-binary", _cifar_files(1, "train.bin", "test.bin"), 2, 1),
        torchvision=TorchvisionLayout("CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz",
                                      _cifar_files(1, "train", "test")),
        corruptions="CIFAR-100-C"),
    "imagenet": DatasetFacts(
        name="imagenet", classes=1000, image_size=224, test_images=5000, eps=_IMAGENET_EPS,
        sources=("imagefolder",), robustbench="imagenet"),
    "imagefolder": DatasetFacts(
        name="imagefolder", classes=None, image_size=224, test_images=None, eps=_IMAGENET_EPS,
        sources=("imagefolder",)),
}


def facts(dataset: str) -> DatasetFacts:
    """The row of ``dataset``, else the standard unknown-name error (naming every row)."""
    try:
        return FACTS[dataset]
    except (KeyError, TypeError):
        raise unknown("dataset", dataset, FACTS) from None


def dataset_names(*, source: Optional[str] = None, robustbench: bool = False,
                  corruptions: bool = False) -> Tuple[str, ...]:
    """Names of the rows (in table order), optionally only those with a ``source`` kind, a
    RobustBench name or a corruptions release."""
    return tuple(name for name, row in FACTS.items()
                 if (source is None or source in row.sources)
                 and (not robustbench or row.robustbench is not None)
                 and (not corruptions or row.corruptions is not None))


class FactView(Mapping):
    """A read-only live view ``name -> getter(row)`` of the rows where ``keep(row)`` holds (the
    older dict names: ``DATASETS``, ``DATASET_MEAN``, ``DATASET_STD``)."""

    def __init__(self, getter, keep=lambda row: True):
        self._get, self._keep = getter, keep

    def _rows(self):
        return {name: row for name, row in FACTS.items() if self._keep(row)}

    def __getitem__(self, name):
        row = FACTS.get(name) if isinstance(name, str) else None
        if row is None or not self._keep(row):
            raise KeyError(name)
        return self._get(row)

    def __iter__(self):
        return iter(self._rows())

    def __len__(self):
        return len(self._rows())

    def __repr__(self):
        return repr(dict(self.items()))
