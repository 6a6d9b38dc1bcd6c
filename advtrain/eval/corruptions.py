"""Common corruptions (CIFAR-10-C / CIFAR-100-C): RobustBench's third CIFAR threat model.

``advtrain eval CKPT --dataset cifar10 --threat-model corruptions --data-root DIR`` reads DIR the
way RobustBench's ``data_dir`` is read: ``DIR/CIFAR-10-C/<corruption>.npy`` (N*5 images, uint8
N×32×32×3, severities 1..5 stacked in blocks of N) and ``DIR/CIFAR-10-C/labels.npy`` (N or 5N
labels), the clean test set in DIR itself (any layout ``advtrain.data`` reads). It writes

- ``<out>/<dataset>/corruptions/<name>.json``: a RobustBench corruptions card (``clean_acc``,
  ``corruptions_acc`` = mean over the 15 corruptions x 5 severities, as in
  ``robustbench.eval.corruptions_evaluation``), loadable as ``robustbench.utils.ModelInfo``;
- ``<name>.advtrain.json`` beside it: accuracy per corruption and severity, per corruption (mean
  over severities), per severity (mean over corruptions), n per block, versions, command.

Every accuracy is taken by the one accuracy loop (:mod:`advtrain.eval.accuracy`); the result is a
:class:`~advtrain.eval.settings.CorruptionsResult`, written by the one card writer
(:func:`advtrain.eval.cards.write_card`). The folder name (``CIFAR-10-C``) and the published block
size (the test-set size) are the dataset's row in :data:`advtrain.data.facts.FACTS`.

The published layout (N = 10,000) is read by RobustBench's own ``load_corruptions_cifar``. A
reduced folder (N < 10,000, e.g. a few images per block for a quick check or a test) is read
here, memory-mapped, with the same slicing: RobustBench's loader hard-codes 10,000 images per
severity (it would slice a reduced file wrongly) and downloads the 2.9 GB archive from Zenodo when
the folder is missing, which advtrain never does (no network at run time).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from advtrain.data.facts import facts
from advtrain.data.names import num_classes
from advtrain.errors import DataError, InputError
from advtrain.eval import accuracy as loop
from advtrain.eval.settings import CorruptionsResult

SEVERITIES = (1, 2, 3, 4, 5)


def published_n(dataset: str) -> int:
    """Images per severity block in the published files: the whole test split, corrupted."""
    return facts(dataset).test_images


def folder_name(dataset: str) -> str:
    """``CIFAR-10-C``: the folder of ``dataset``'s corruptions release (its facts row)."""
    name = facts(dataset).corruptions
    if name is None:
        from advtrain.data.facts import dataset_names

        raise InputError(f"{dataset} has no common-corruptions release; --threat-model corruptions "
                         f"is for --dataset {' or '.join(dataset_names(corruptions=True))}")
    return name


def corruption_names() -> Tuple[str, ...]:
    """RobustBench's list of the 15 corruptions (its constant, imported, not copied)."""
    from robustbench.data import CORRUPTIONS

    return tuple(CORRUPTIONS)


def corruption_folder(root, dataset: str) -> Path:
    """``root/CIFAR-10-C`` with ``labels.npy`` and every corruption file, else one-line error."""
    folder = Path(root) / folder_name(dataset)
    missing = [n + ".npy" for n in ("labels",) + corruption_names()
               if not (folder / (n + ".npy")).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing[:3])}"
                        f"{' and %d more' % (len(missing) - 3) if len(missing) > 3 else ''}; "
                        f"--data-root must hold {folder.name}/ in its published layout "
                        "(<corruption>.npy + labels.npy, as unpacked from Zenodo)")
    return folder


def _open(path: Path) -> np.ndarray:
    from advtrain.data.npz import BAD_HEADER

    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (*BAD_HEADER, OSError) as e:
        raise DataError(f"{path} is not a readable .npy array ({e}); re-extract it") from None


def block_size(folder: Path, classes: int) -> int:
    """N, the images per severity, checked against every file's shape and the labels (integers
    in [0, classes): a label no class can match would lower the accuracy silently)."""
    labels = _open(folder / "labels.npy")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or not len(labels) \
            or int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise DataError(f"{folder / 'labels.npy'}: expected integer labels in [0, {classes}) "
                        f"(one per image), got {labels.dtype} {labels.shape}; re-extract it")
    sizes = set()
    for name in corruption_names():
        arr = _open(folder / f"{name}.npy")
        if arr.ndim != 4 or arr.shape[1:] != (32, 32, 3) or arr.dtype != np.uint8 \
                or len(arr) % len(SEVERITIES) or not len(arr):
            raise DataError(f"{folder / name}.npy holds {arr.dtype} {arr.shape}; expected uint8 "
                            "(5*N, 32, 32, 3): five severities of N images")
        sizes.add(len(arr) // len(SEVERITIES))
    if len(sizes) != 1 or len(labels) not in (min(sizes), 5 * min(sizes)):
        raise DataError(f"{folder}: corruption files hold {sorted(sizes)} images per severity and "
                        f"labels.npy {len(labels)}; all must share one N (labels: N or 5N)")
    n = sizes.pop()
    _check_label_blocks(folder / "labels.npy", labels, n)
    return n


def _check_label_blocks(path: Path, labels: np.ndarray, n: int) -> None:
    """5N labels are one block per severity; every severity is scored against the first block (as
    RobustBench does), so the blocks must agree, or the folder is refused (checked in chunks)."""
    if len(labels) == n:
        return
    chunk = 1 << 20
    for block in range(1, len(SEVERITIES)):
        for start in range(0, n, chunk):
            first = np.asarray(labels[start:min(n, start + chunk)])
            other = np.asarray(labels[block * n + start:block * n + min(n, start + chunk)])
            bad = np.flatnonzero(first != other)
            if len(bad):
                i = start + int(bad[0])
                raise DataError(f"{path}: the labels of severity {block + 1} differ from those of "
                                f"severity 1 (image {i}: {int(other[bad[0]])} vs "
                                f"{int(first[bad[0]])}); every severity is scored against one "
                                "block of N labels: re-extract the folder")


def load_block(folder: Path, dataset: str, corruption: str, severity: int, n: int,
               n_block: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of one corruption at one severity, as RobustBench slices them."""
    if n_block == published_n(dataset) and facts(dataset).robustbench is not None:
        from robustbench.data import load_corruptions_cifar
        from robustbench.model_zoo.enums import BenchmarkDataset

        x, y = load_corruptions_cifar(BenchmarkDataset(facts(dataset).robustbench), n, severity,
                                      str(folder.parent), [corruption])
        return x, y.long()
    images = _open(folder / f"{corruption}.npy")[(severity - 1) * n_block:][:n]
    labels = _open(folder / "labels.npy")[:n]
    x = torch.from_numpy(np.array(images, dtype=np.float32) / 255).permute(0, 3, 1, 2)
    return x.contiguous(), torch.from_numpy(np.array(labels, dtype=np.int64))


def evaluate_corruptions(model, root, dataset: str, clean: Tuple[torch.Tensor, torch.Tensor], *,
                         n_ex: int, batch_size: int = 500, log=print) -> CorruptionsResult:
    """Accuracy on the first ``n_ex`` clean test images ``clean = (x, y)`` and on every
    corruption x severity block (first ``min(n_ex, N)`` images of each), all through the one
    accuracy loop (on the model's device)."""
    import time

    def accuracy(x, y) -> float:
        return loop.accuracy(model, x, y, batch_size=batch_size, progress=False)

    folder = corruption_folder(root, dataset)
    n_block = block_size(folder, num_classes(dataset))
    n = min(n_ex, n_block)
    table: Dict[str, Dict[str, float]] = {}
    names = corruption_names()
    t0 = time.perf_counter()
    for i, name in enumerate(names):
        table[name] = {}
        for s in SEVERITIES:
            x, y = load_block(folder, dataset, name, s, n, n_block)
            table[name][str(s)] = accuracy(x, y)
        eta = (time.perf_counter() - t0) / (i + 1) * (len(names) - i - 1)
        log(f"corruptions {i + 1}/{len(names)} {name}: "
            f"{np.mean(list(table[name].values())):.2%} (ETA {eta:.0f}s)")
    per_corruption = {k: float(np.mean(list(v.values()))) for k, v in table.items()}
    per_severity = {str(s): float(np.mean([table[k][str(s)] for k in names])) for s in SEVERITIES}
    x_clean, y_clean = clean[0][:n_ex], clean[1][:n_ex]
    return CorruptionsResult(
        clean_acc=accuracy(x_clean, y_clean), n_clean=len(y_clean),
        corruptions_acc=float(np.mean(list(per_corruption.values()))),
        per_corruption_severity=table, per_corruption=per_corruption, per_severity=per_severity,
        n_per_block=n, n_block=n_block, folder=str(folder))
