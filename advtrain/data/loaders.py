"""Loaders: the training loader (plain, DDP-sharded, or real/generated mixing) and test arrays.

:func:`build_train_loader` returns a :class:`~advtrain.data.augment.DeviceLoader` that reads uint8
batches (pinned when the device is CUDA) and runs crop + flip + scaling to [0,1] batched on ``device``.
``workers`` reader threads gather the batches from the (memory-mapped) arrays ahead of the step; with
``augment="autoaugment"`` they are instead persistent ``DataLoader`` worker processes (never
re-forked), since each image's AutoAugment view is per-image CPU work that threads would serialise.
Batches are ``(x, y)`` with ``x`` float32 in [0,1] of shape B×3×32×32 on ``device`` and ``y`` int64.
With ``augment="autoaugment"`` ``x`` has 2B rows, the first B the basic (crop + flip) views and the
last B the AutoAugment views of the *same* images, and ``y`` is the B labels twice (the layout the
reference's two-view objective expects, SPEC §2.2). ``loader.two_view`` tells which.

Call :func:`set_loader_epoch` before every epoch: it reshuffles (``DistributedSampler`` /
:class:`~advtrain.data.sampling.MixedSampler`) and selects the epoch's augmentation draws, so batch
``b`` of epoch ``e`` is the same in every run with the same seed, for any number of workers and from
any resume point (the draws depend on (seed, epoch, batch index), not on what was iterated before).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from advtrain.data.augment import DeviceLoader
from advtrain.data.datasets import ArrayDataset, ConcatArrays, EpochBatches, check_augment
from advtrain.data.imagefolder import build_folder_train_loader, is_folder_dataset, load_folder_test
from advtrain.data.names import check_dataset
from advtrain.data.names import num_classes as num_classes_of  # build_train_loader's num_classes: a count
from advtrain.data.npz import read_npz
from advtrain.data.sampling import MixedSampler
from advtrain.data.sources import load_arrays
from advtrain.errors import DataError, InputError


def _batch_as_is(batch):
    """Collate of a dataset that reads whole batches (``__getitems__``): nothing left to do."""
    return batch


def set_loader_epoch(loader, epoch: int) -> None:
    """Tell the loader which epoch comes next (reshuffle + the epoch's augmentation draws)."""
    loader.set_epoch(epoch)


def _train_indices(n_total: int, holdout: int, subset: Union[None, int, Sequence[int]]) -> np.ndarray:
    if not 0 <= holdout < n_total:
        raise InputError(f"holdout={holdout} but the training set has {n_total} images; use 0 <= holdout < {n_total}")
    indices = np.arange(holdout, n_total)
    if subset is None:
        return indices
    if isinstance(subset, (int, np.integer)):
        if not 1 <= subset <= len(indices):
            raise InputError(f"subset={subset} but {len(indices)} training images remain after the holdout; "
                             f"use 1 <= subset <= {len(indices)}")
        return indices[:subset]
    chosen = np.asarray(subset, dtype=np.int64)
    if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= len(indices):
        raise InputError(f"subset indices must lie in [0, {len(indices)}) (training images after the holdout)")
    return indices[chosen]


def build_train_loader(dataset: str, *, root: Optional[str] = None, train_npz: Optional[str] = None,
                       synthetic_npz: Union[str, Sequence[str]] = (), synthetic_fraction: float = 0.7,
                       augment: str = "basic", batch_size: int = 128, workers: int = 0, seed: int = 0,
                       drop_last: bool = False, subset=None, holdout: int = 0, rank: int = 0,
                       world_size: int = 1, device="cpu", pin_memory: Optional[bool] = None,
                       num_classes: Optional[int] = None, image_size: Optional[int] = None,
                       augment_options: Optional[dict] = None) -> DeviceLoader:
    """Training loader yielding float batches on ``device``; ``batch_size`` is per rank.

    See the module docstring for the batch layout. ``holdout`` drops the first ``holdout`` real images
    (DM's 1,024-image validation set, see :func:`load_holdout_arrays`); ``subset`` (int or indices) then
    keeps part of the rest. With ``synthetic_npz`` the batches come from :class:`MixedSampler`
    (``drop_last`` is then moot: every batch is full); otherwise from a ``DistributedSampler``
    (``world_size`` 1 included). ``pin_memory`` defaults to "the device is CUDA".
    """
    check_dataset(dataset)
    check_augment(augment)
    if batch_size < 1 or workers < 0:
        raise InputError(f"need batch_size >= 1 and workers >= 0, got {batch_size} and {workers}")
    device = torch.device(device)
    if is_folder_dataset(dataset):  # ImageFolder trees: decoded and cropped in the workers
        return build_folder_train_loader(root, num_classes=num_classes_of(dataset, num_classes),
                                         image_size=image_size, augment=augment, batch_size=batch_size,
                                         workers=workers, seed=seed, drop_last=drop_last, subset=subset,
                                         rank=rank, world_size=world_size, device=device,
                                         pin_memory=(device.type == "cuda" if pin_memory is None
                                                     else pin_memory), augment_options=augment_options)
    two_view = augment == "autoaugment"
    images, labels = load_arrays(dataset, "train", root=root, npz=train_npz)
    indices = _train_indices(len(labels), holdout, subset)
    real = ArrayDataset(images, labels, indices, two_view=two_view, seed=seed)
    paths = [synthetic_npz] if isinstance(synthetic_npz, str) else list(synthetic_npz)
    if paths:
        gens = [ArrayDataset(*read_npz(p, num_classes_of(dataset)), two_view=two_view, seed=seed, part=k + 1)
                for k, p in enumerate(paths)]
        epoch_images = len(labels) if subset is None else len(real)
        sampler = MixedSampler(len(real), sum(len(g) for g in gens), batch_size, synthetic_fraction,
                               seed=seed, epoch_images=epoch_images, rank=rank, world_size=world_size)
        data, batches, image_sampler, per_batch = ConcatArrays([real, *gens]), sampler, sampler, None
    else:
        image_sampler = DistributedSampler(real, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        batches = BatchSampler(image_sampler, batch_size, drop_last)
        data, per_batch = real, batch_size
    keys = EpochBatches(batches, batch_size)
    # worker processes only where per-image CPU work remains (AutoAugment views); plain reads are one
    # gather per batch, done in threads of this process (no copy through a pipe, see read_ahead)
    processes = DataLoader(data, batch_sampler=keys, num_workers=workers, collate_fn=_batch_as_is,
                           persistent_workers=True, prefetch_factor=4) if two_view and workers else None
    return DeviceLoader(data, keys, device=device, seed=seed, crop=augment != "none", two_view=two_view,
                        sampler=image_sampler, batch_size=per_batch, processes=processes,
                        threads=0 if two_view else workers, rank=rank, world_size=world_size,
                        pin_memory=pin_memory)


def _to_tensors(images, labels, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.array(images[:n], dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(), torch.from_numpy(np.array(labels[:n], dtype=np.int64))


def load_test_arrays(dataset: str, *, root: Optional[str] = None, npz: Optional[str] = None,
                     n_ex: Optional[int] = None, **folder) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_ex`` test images as (x float32 in [0,1] N×3×32×32, y int64 N); all when None.

    ImageFolder datasets: ``root/val`` at ``folder["image_size"]`` (see
    :func:`~advtrain.data.imagefolder.load_folder_test` for the other ``folder`` keys)."""
    if is_folder_dataset(check_dataset(dataset)):
        return load_folder_test(root, n_ex=n_ex, **folder)
    images, labels = load_arrays(dataset, "test", root=root, npz=npz)
    if len(labels) == 0:
        raise DataError(f"the {dataset} test data ({npz or root or 'default location'}) holds no "
                        "images; give a test set with at least one image")
    n = len(labels) if n_ex is None else n_ex
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= len(labels):
        raise InputError(f"n_ex={n_ex} but the {dataset} test set has {len(labels)} images; "
                         f"use 1 <= n_ex <= {len(labels)}")
    return _to_tensors(images, labels, int(n))


def load_holdout_arrays(dataset: str, holdout: int, *, root: Optional[str] = None,
                        npz: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``holdout`` training images (the validation set a ``holdout`` loader leaves out)."""
    images, labels = load_arrays(dataset, "train", root=root, npz=npz)
    if not 1 <= holdout < len(labels):
        raise InputError(f"holdout={holdout} but the training set has {len(labels)} images; "
                         f"use 1 <= holdout < {len(labels)}")
    return _to_tensors(images, labels, holdout)
