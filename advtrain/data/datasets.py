"""``ArrayDataset``: uint8 HWC arrays -> (float tensor in [0,1] CHW, int label), with augmentation.

Augmentations work on uint8 CHW tensors and the dataset converts the result with ``x / 255``:

- ``"none"``: the image as is (test-time pipeline, ``ToTensor`` only);
- ``"basic"``: ``RandomCrop(32, padding=4)`` with zero padding + horizontal flip with p = 1/2 (SPEC §5.1);
- ``"autoaugment"``: two views of the same image, ``(basic view, AutoAugment view)``, where the
  AutoAugment view is crop + flip followed by ``torchvision.transforms.AutoAugment(CIFAR10 policy)``,
  the order of the reference ``transform_aug_autoaug`` (SPEC §2.2). The loader's collate concatenates
  them into a 2B batch (see :func:`advtrain.data.loaders.two_view_collate`).

Reproducibility: with ``seed`` set, the randomness of sample ``i`` in epoch ``e`` is drawn from torch,
numpy and Python ``random`` generators seeded by ``hash(seed, e, i)`` (the global states are restored
afterwards), so an augmented sample is a pure function of (seed, epoch, index): identical for any number
of workers, any rank and any global RNG state. ``set_epoch`` changes the draw every epoch.
"""
from __future__ import annotations

import hashlib
import random
from contextlib import contextmanager
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from advtrain.data.npz import reopen
from advtrain.errors import unknown

AUGMENTATIONS = ("none", "basic", "autoaugment")


def random_crop_flip(img: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Zero-pad by ``padding``, take a random crop of the original size, flip horizontally w.p. 1/2."""
    _, h, w = img.shape
    padded = F.pad(img, (padding, padding, padding, padding))
    top, left = (int(v) for v in torch.randint(0, 2 * padding + 1, (2,)))
    out = padded[:, top:top + h, left:left + w]
    if torch.rand(()) < 0.5:
        out = out.flip(-1)
    return out.contiguous()


class AutoAugmentView:
    """Crop + flip, then torchvision's AutoAugment with the CIFAR-10 policy (uint8 in, uint8 out)."""

    def __init__(self):
        from torchvision.transforms import AutoAugment, AutoAugmentPolicy

        self.autoaugment = AutoAugment(AutoAugmentPolicy.CIFAR10)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.autoaugment(random_crop_flip(img))


class TwoView:
    """Return ``(first(img), second(img))``: two augmented views of the same image."""

    def __init__(self, first: Callable, second: Callable):
        self.first, self.second = first, second

    def __call__(self, img: torch.Tensor):
        return self.first(img), self.second(img)


def make_transform(augment: str) -> Optional[Callable]:
    """The uint8 transform for an augmentation name ('none' -> None)."""
    if augment == "none":
        return None
    if augment == "basic":
        return random_crop_flip
    if augment == "autoaugment":
        return TwoView(random_crop_flip, AutoAugmentView())
    raise unknown("augment", augment, AUGMENTATIONS)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends on (seed, epoch, index) only."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextmanager
def seeded_rng(seed: int):
    """Seed torch (CPU), numpy and Python ``random`` with ``seed`` inside.

    In the main process the global states are restored on exit; inside a DataLoader worker (whose
    global RNGs serve nothing else) they are not, which saves most of the cost.
    """
    restore = torch.utils.data.get_worker_info() is None
    if restore:
        saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        if restore:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])


def _to_float(x):
    if isinstance(x, tuple):
        return tuple(_to_float(v) for v in x)
    return x.float().div_(255.0)


class ArrayDataset(torch.utils.data.Dataset):
    """Images uint8 N×32×32×3 (array or memmap) and labels -> ``(x in [0,1] 3×32×32, y)``.

    ``indices`` restricts and reorders the samples (``dataset[i]`` is image ``indices[i]``); ``transform``
    maps a uint8 CHW tensor to a uint8 tensor or a tuple of them (two-view mode, returned as a tuple).
    ``seed`` (an int, or any value with a stable ``str``) makes the augmentation of image ``j`` in epoch
    ``e`` a function of ``(seed, e, j)`` only; ``None`` uses the global RNGs (seeded per worker by
    :func:`advtrain.data.sampling.worker_init_fn`).
    """

    def __init__(self, images, labels, transform: Optional[Callable] = None,
                 indices: Optional[Sequence[int]] = None, seed: Optional[int] = None):
        self.images, self.labels = images, labels
        self.transform = transform
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` (only matters when ``seed`` is set)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.labels)

    def __getitem__(self, i: int):
        j = int(self.indices[i]) if self.indices is not None else int(i)
        img = torch.from_numpy(np.array(self.images[j], dtype=np.uint8)).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            if self.seed is None:
                img = self.transform(img)
            else:
                with seeded_rng(sample_seed(self.seed, self.epoch, j)):
                    img = self.transform(img)
        return _to_float(img), int(self.labels[j])

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
