"""Where images come from: CIFAR binary folders, torchvision's CIFAR folders, or ``.npz`` files.

Every source yields ``(images, labels)``: images uint8 N×32×32×3 (HWC, possibly an ``np.memmap``),
labels int64 N. :func:`resolve_source` picks one, in this order:

1. an explicit ``npz`` file;
2. under ``root`` (``--data-root``): ``cifar-10-batches-bin`` / ``cifar-100-binary`` (parsed with numpy),
   ``cifar-10-batches-py`` / ``cifar-100-python`` (torchvision, which checks the md5 of the official
   pickle batches before reading them -- no other pickle is ever loaded), or ``{split}.npz``;
3. the same under the directory in the environment variable ``ADVTRAIN_DATA``;
4. a torchvision download into ``root`` (or ``./data``) unless ``ADVTRAIN_OFFLINE=1``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from advtrain.data.facts import facts
from advtrain.data.names import check_dataset, check_split, num_classes
from advtrain.data.npz import check_arrays, read_npz
from advtrain.errors import DataError

_IMAGE_BYTES = 3 * 32 * 32


def offline() -> bool:
    """True when ``ADVTRAIN_OFFLINE`` is set to a true value (no downloads are attempted)."""
    return os.environ.get("ADVTRAIN_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def read_cifar_binary(folder: str, dataset: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Parse the official CIFAR binary release: records of label byte(s) + 3072 bytes CHW."""
    layout = _binary(dataset)
    n_label, which = layout.label_bytes, layout.label_index
    record = n_label + _IMAGE_BYTES
    images, labels = [], []
    for name in layout.files[split]:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DataError(f"{folder}: missing {name}; re-extract the official CIFAR binary archive there")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DataError(f"{path}: size {raw.size} is not a multiple of the {record}-byte CIFAR record "
                            f"(truncated?); re-extract the official CIFAR binary archive")
        raw = raw.reshape(-1, record)
        labels.append(raw[:, which].astype(np.int64))
        images.append(raw[:, n_label:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    x = np.ascontiguousarray(np.concatenate(images))
    return x, check_arrays(x, np.concatenate(labels), folder, num_classes(dataset))


def read_torchvision(root: str, dataset: str, split: str, download: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """torchvision's CIFAR10/100 (md5-verified official pickle batches), downloading if asked."""
    from torchvision import datasets

    layout = _torchvision(dataset)
    cls = getattr(datasets, layout.cls)
    try:
        ds = cls(root=root, train=split == "train", download=download)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted"
        folder = os.path.join(root, layout.folder)
        raise DataError(f"{folder}: incomplete or corrupt (failed torchvision's md5 check; an interrupted "
                        f"download or extraction?); delete it{_and_archive(root, dataset)} and run again "
                        f"with downloads on, or {_options(dataset, split)}") from None
    except OSError as e:  # network failure while downloading
        raise DataError(f"cannot download {dataset} into {root} ({e}); {_options(dataset, split)}") from None
    x = np.asarray(ds.data, dtype=np.uint8)
    return x, check_arrays(x, np.asarray(ds.targets, dtype=np.int64), root, num_classes(dataset))


def _warn_if_fewer_classes(labels: np.ndarray, dataset: str, path: str) -> None:
    """Warn when a large npz for a many-class dataset only uses the first 10 labels (CIFAR-10 data?)."""
    n_cls = num_classes(dataset)
    if n_cls > 10 and len(labels) >= 1000 and int(np.max(labels)) < 10:
        warnings.warn(f"{path}: {dataset} expects labels 0..{n_cls - 1} but this file only uses 0..9; "
                      f"is it CIFAR-10 data? check --data-npz / ADVTRAIN_DATA", stacklevel=3)


@dataclass(frozen=True)
class Source:
    """A resolved data source: ``kind`` in {'npz', 'binary', 'torchvision'} and its path."""

    kind: str
    path: str
    dataset: str
    split: str
    download: bool = False

    def load(self) -> Tuple[np.ndarray, np.ndarray]:
        """(images uint8 N×32×32×3, labels int64 N) of this source."""
        if self.kind == "npz":
            images, labels = read_npz(self.path, num_classes(self.dataset))
            _warn_if_fewer_classes(labels, self.dataset, self.path)
            return images, labels
        if self.kind == "binary":
            return read_cifar_binary(self.path, self.dataset, self.split)
        return read_torchvision(self.path, self.dataset, self.split, download=self.download)


def source_files(src: Source) -> List[str]:
    """The files ``src.load()`` reads (what a provenance record hashes)."""
    if src.kind == "npz":
        return [src.path]
    if src.kind == "binary":
        return [os.path.join(src.path, name) for name in _binary(src.dataset).files[src.split]]
    layout = _torchvision(src.dataset)
    return [os.path.join(src.path, layout.folder, name) for name in layout.files[src.split]]


def _binary(dataset: str):
    """The CIFAR binary layout of ``dataset`` (its facts row)."""
    layout = facts(dataset).binary
    if layout is None:
        raise DataError(f"{dataset} has no CIFAR binary release; give an npz file or a folder")
    return layout


def _torchvision(dataset: str):
    """torchvision's class and folders of ``dataset`` (its facts row)."""
    layout = facts(dataset).torchvision
    if layout is None:
        raise DataError(f"{dataset} is not a torchvision dataset; {_options(dataset, 'test')}")
    return layout


def _options(dataset: str, split: str) -> str:
    row = facts(dataset)
    folders = "".join(f"{layout.folder}/ or " for layout in (row.binary, row.torchvision) if layout)
    return (f"give local data: a directory (eval --data-root DIR, config data.root) containing {folders}"
            f"{split}.npz, an npz file (eval --data-npz FILE, config data.{split}_npz) "
            f"with keys image, label, or set ADVTRAIN_DATA to such a directory "
            f"(e.g. ADVTRAIN_DATA=../shared/data/cifar10-jpeg)")


def _archive(root: Optional[str], dataset: str) -> Optional[str]:
    """torchvision's download archive (``cifar-10-python.tar.gz``) left in ``root``, if any."""
    layout = facts(dataset).torchvision
    if root is None or layout is None:
        return None
    path = os.path.join(os.fspath(root), layout.archive)
    return path if os.path.isfile(path) else None


def _and_archive(root: str, dataset: str) -> str:
    archive = _archive(root, dataset)
    return f" and {archive}" if archive else ""


def _find_in(directory: str, dataset: str, split: str) -> Optional[Source]:
    row = facts(dataset)
    if row.binary is not None and os.path.isdir(os.path.join(directory, row.binary.folder)):
        return Source("binary", os.path.join(directory, row.binary.folder), dataset, split)
    if row.torchvision is not None and os.path.isdir(os.path.join(directory, row.torchvision.folder)):
        return Source("torchvision", directory, dataset, split)
    npz = os.path.join(directory, f"{split}.npz")
    if os.path.isfile(npz):
        return Source("npz", npz, dataset, split)
    return None


def resolve_source(dataset: str, split: str, *, root: Optional[str] = None, npz: Optional[str] = None) -> Source:
    """Pick the source of ``dataset``/``split`` (see the module docstring for the order)."""
    check_dataset(dataset)
    check_split(split)
    if npz is not None:
        return Source("npz", os.fspath(npz), dataset, split)
    for directory, what in ((root, "data directory"), (os.environ.get("ADVTRAIN_DATA") or None,
                                                       "ADVTRAIN_DATA")):
        if directory is None:
            continue
        directory = os.fspath(directory)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise DataError(f"{what} {directory} is a file, not a directory; point it at the directory "
                            f"that holds the data, or pass a single npz file as the npz (eval "
                            f"--data-npz FILE, config data.{split}_npz)")
        if not os.path.isdir(directory):
            raise DataError(f"{what} {directory} does not exist; {_options(dataset, split)}")
        found = _find_in(directory, dataset, split)
        if found is not None:
            return found
    if offline():
        archive = _archive(root, dataset)
        if archive is not None:
            raise DataError(f"{archive}: an unfinished download (not extracted) and downloads are off "
                            f"(ADVTRAIN_OFFLINE=1); delete it and run again online, or {_options(dataset, split)}")
        where = f" under {root}" if root is not None else ""
        raise DataError(f"no local {dataset} {split} data found{where} and downloads are off "
                        f"(ADVTRAIN_OFFLINE=1); {_options(dataset, split)}")
    if facts(dataset).torchvision is None:  # nothing to download
        where = f" under {root}" if root is not None else ""
        raise DataError(f"no local {dataset} {split} data found{where}; {_options(dataset, split)}")
    return Source("torchvision", os.fspath(root) if root is not None else "./data", dataset, split, download=True)


def load_arrays(dataset: str, split: str, *, root: Optional[str] = None,
                npz: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Resolve and load: (images uint8 N×32×32×3, labels int64 N)."""
    return resolve_source(dataset, split, root=root, npz=npz).load()
