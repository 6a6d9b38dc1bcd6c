"""``ArrayDataset``: uint8 HWC image arrays read in batches, for the device-side augmentation.

Augmentations (``data.augment``):

- ``"none"``: the image as is (test-time pipeline, ``ToTensor`` only);
- ``"basic"``: ``RandomCrop(32, padding=4)`` with zero padding + horizontal flip with p = 1/2 (SPEC §5.1);
- ``"autoaugment"``: two views of the same image, ``(basic view, AutoAugment view)``, where the
  AutoAugment view is crop + flip followed by AutoAugment (CIFAR10 policy), the order of the reference
  ``transform_aug_autoaug`` (SPEC §2.2). The batch is ``[basic views; AutoAugment views]`` (2B rows).

Crop, flip and scaling to [0,1] happen on the training device, batched
(:class:`advtrain.data.augment.DeviceLoader`); the dataset only reads uint8 images, so a worker's
work per batch is one fancy-index read. In two-view mode the worker also makes each image's AutoAugment
view, from a generator seeded by (seed, part, epoch, image index): a pure function of those, for any
number of workers and any rank. The keys a batch sampler hands the dataset are ``(epoch, i)`` pairs
(:class:`EpochBatches`), so the epoch reaches persistent workers without re-forking them.
"""
from __future__ import annotations

import bisect
from typing import Optional, Sequence

import numpy as np
import torch

from advtrain.data.augment import AutoAugmentView, derive_seed
from advtrain.data.npz import reopen
from advtrain.errors import unknown

AUGMENTATIONS = ("none", "basic", "autoaugment")


def check_augment(augment: str) -> str:
    """Return ``augment`` if it is a known augmentation name, else the standard unknown-name error."""
    if augment not in AUGMENTATIONS:
        raise unknown("augment", augment, AUGMENTATIONS)
    return augment


class ArrayDataset(torch.utils.data.Dataset):
    """Images uint8 N×32×32×3 (array or memmap) and labels, read a batch at a time.

    ``indices`` restricts and reorders the samples (sample ``i`` is image ``indices[i]``).
    ``dataset[i]`` is ``(uint8 3×32×32, label)``; :meth:`__getitems__` (what the DataLoader calls with a
    batch of keys) returns ``(images uint8 B×32×32×3, labels int64 numpy B, views)`` with ``views`` the
    AutoAugment views (uint8 B×3×32×32) when ``two_view``, else None. ``seed`` and ``part`` (which file
    of a mix) select the views' draws.
    """

    def __init__(self, images, labels, indices: Optional[Sequence[int]] = None, *, two_view: bool = False,
                 seed: int = 0, part: int = 0):
        self.images, self.labels = images, labels
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        self.two_view, self.seed, self.part = two_view, int(seed), int(part)
        self.view = AutoAugmentView() if two_view else None

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.labels)

    def _image_index(self, i) -> np.ndarray:
        i = np.asarray(i, dtype=np.int64)
        return self.indices[i] if self.indices is not None else i

    def __getitem__(self, i: int):
        j = int(self._image_index(i))
        return torch.from_numpy(np.array(self.images[j], dtype=np.uint8)).permute(2, 0, 1), int(self.labels[j])

    def __getitems__(self, keys):
        epochs, i = _split_keys(keys)
        j = self._image_index(i)
        images = _batch_tensor((len(j),) + tuple(self.images.shape[1:]))
        np.take(self.images, j, axis=0, out=images.numpy())
        labels = np.asarray(self.labels[j], dtype=np.int64)  # small: pickled, no shared-memory segment
        views = None
        if self.two_view:
            views = torch.stack([self.view(img.permute(2, 0, 1), torch.Generator().manual_seed(
                derive_seed(self.seed, self.part, e, k))) for img, e, k in zip(images, epochs, j.tolist())])
        return images, labels, views

    def __getstate__(self):  # memory-mapped arrays travel as (path, offset, ...) not as their data
        state = dict(self.__dict__)
        for key in ("images", "labels"):
            spec = getattr(state[key], "_advtrain_spec", None)
            if spec is not None:
                state[key] = ("__memmap__", spec)
        return state

    def __setstate__(self, state):
        for key in ("images", "labels"):
            value = state[key]
            if isinstance(value, tuple) and len(value) == 2 and value[0] == "__memmap__":
                state[key] = reopen(value[1])
        self.__dict__.update(state)


def _batch_tensor(shape) -> torch.Tensor:
    """An empty uint8 tensor; in a worker, in shared memory, so sending it to the main process is free."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    return torch.empty(shape, dtype=torch.uint8).share_memory_()


def _split_keys(keys):
    """``[(epoch, i), ...]`` or ``[i, ...]`` (epoch 0) -> (epochs list, indices array)."""
    if len(keys) and isinstance(keys[0], tuple):
        epochs, idx = zip(*keys)
        return list(epochs), np.asarray(idx, dtype=np.int64)
    return [0] * len(keys), np.asarray(keys, dtype=np.int64)


class ConcatArrays(torch.utils.data.Dataset):
    """Several :class:`ArrayDataset` end to end (real images first, then generated ones), batch reads."""

    def __init__(self, parts: Sequence[ArrayDataset]):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts]).tolist()

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitems__(self, keys):
        epochs, idx = _split_keys(keys)
        which = np.asarray([bisect.bisect_right(self.starts, int(i)) - 1 for i in idx])
        outs, order = [], []
        for k, part in enumerate(self.parts):
            pos = np.flatnonzero(which == k)
            if len(pos):
                outs.append(part.__getitems__([(epochs[p], int(idx[p]) - self.starts[k]) for p in pos]))
                order.append(pos)
        inverse = torch.from_numpy(np.argsort(np.concatenate(order), kind="stable"))
        images = torch.cat([o[0] for o in outs])[inverse]
        labels = np.concatenate([o[1] for o in outs])[inverse.numpy()]
        views = None if outs[0][2] is None else torch.cat([o[2] for o in outs])[inverse]
        return images, labels, views


class EpochBatches(torch.utils.data.Sampler):
    """A batch sampler whose batches are ``(epoch, index)`` keys; ``set_epoch`` reaches the inner one."""

    def __init__(self, batches, batch_size: int):
        self.batches, self.batch_size, self.epoch = batches, int(batch_size), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for obj in (self.batches, getattr(self.batches, "sampler", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    def __iter__(self):
        for batch in self.batches:
            yield [(self.epoch, int(i)) for i in batch]

    def __len__(self) -> int:
        return len(self.batches)
