"""``ArrayDataset``: uint8 HWC image arrays read in batches, for the device-side augmentation.

Augmentations (``data.augment``):

- ``"none"``: the image as is (test-time pipeline, ``ToTensor`` only);
- ``"basic"``: ``RandomCrop(32, padding=4)`` with zero padding + horizontal flip with p = 1/2 (SPEC §5.1);
- ``"autoaugment"``: two views of the same image, ``(basic view, AutoAugment view)``, where the
  AutoAugment view is crop + flip followed by AutoAugment (CIFAR10 policy), the order of the reference
  ``transform_aug_autoaug`` (SPEC §2.2). The batch is ``[basic views; AutoAugment views]`` (2B rows).

Crop, flip and scaling to [0,1] happen on the training device, batched
(:class:`advtrain.data.augment.DeviceLoader`); the dataset only reads uint8 images, so a read is one
fancy-index gather per batch (done by reader threads of the main process). In two-view mode the read
also makes each image's AutoAugment view (in worker processes), from a generator seeded by
(seed, part, epoch, image index): a pure function of those, for any number of workers and any rank.
The key a batch sampler hands the dataset is ``(epoch, indices)`` (:class:`EpochBatches`), so the
epoch reaches persistent workers without re-forking them.
"""
from __future__ import annotations

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
    ``dataset[i]`` is ``(uint8 3×32×32, label)``; :meth:`__getitems__` (called with a batch's key;
    thread-safe: it only reads) returns numpy ``(images uint8 B×32×32×3, labels int64 B, views)``
    with ``views`` the AutoAugment views (uint8 B×3×32×32) when ``two_view``, else None. Numpy, not
    tensors: a worker process sends them as bytes through its pipe, cheaper than a shared-memory
    segment and a descriptor per tensor. ``seed`` and ``part`` (which file of a mix) select the views' draws.
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
        image = torch.from_numpy(np.array(self.images[j], dtype=np.uint8)).permute(2, 0, 1)
        return image, int(self.labels[j])

    def __getitems__(self, keys):
        epoch, i = _split_keys(keys)
        j = self._image_index(i)
        images = np.asarray(np.take(self.images, j, axis=0))  # a plain array, pickled as bytes
        labels = np.asarray(self.labels[j], dtype=np.int64)
        views = np.stack([self._view(img, epoch, k) for img, k in zip(images, j.tolist())]) \
            if self.two_view else None
        return images, labels, views

    def _view(self, img_hwc: np.ndarray, epoch: int, k: int) -> np.ndarray:
        """The AutoAugment view of image ``k``: a function of (seed, part, epoch, k) only."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.part, epoch, k))
        return self.view(torch.from_numpy(img_hwc).permute(2, 0, 1), generator).numpy()

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


def _split_keys(keys):
    """``(epoch, indices)`` from :class:`EpochBatches`, or a plain list of indices (epoch 0)."""
    if isinstance(keys, tuple):
        return keys[0], np.asarray(keys[1], dtype=np.int64)
    return 0, np.asarray(keys, dtype=np.int64)


class ConcatArrays(torch.utils.data.Dataset):
    """Several :class:`ArrayDataset` end to end (real images first, then generated ones), batch reads."""

    def __init__(self, parts: Sequence[ArrayDataset]):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts]).tolist()

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitems__(self, keys):
        epoch, idx = _split_keys(keys)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        outs, order = [], []
        for k, part in enumerate(self.parts):
            pos = np.flatnonzero(which == k)
            if len(pos):
                outs.append(part.__getitems__((epoch, idx[pos] - self.starts[k])))
                order.append(pos)
        inverse = np.argsort(np.concatenate(order), kind="stable")
        images, labels = (np.concatenate([o[n] for o in outs])[inverse] for n in (0, 1))
        views = None if outs[0][2] is None else np.concatenate([o[2] for o in outs])[inverse]
        return images, labels, views


class EpochBatches(torch.utils.data.Sampler):
    """A batch sampler yielding ``(epoch, indices array)`` keys; ``set_epoch`` reaches the inner one."""

    def __init__(self, batches, batch_size: int):
        self.batches, self.batch_size, self.epoch = batches, int(batch_size), 0
        self.start = 0  # batches of the next iteration to skip (DeviceLoader.iter_from); then 0 again

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for obj in (self.batches, getattr(self.batches, "sampler", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    def __iter__(self):
        start, self.start = self.start, 0
        for k, batch in enumerate(self.batches):
            if k >= start:  # the skipped ones are drawn (the sampler's stream) but never read
                yield self.epoch, np.asarray(batch, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.batches)
