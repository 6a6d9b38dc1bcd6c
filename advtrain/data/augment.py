"""Batched augmentation on the training device, and the seeds every random draw of the data comes from.

The loader only reads uint8 images (:func:`read_ahead`: in threads of the main process, or in worker
processes where per-image CPU work remains); :class:`DeviceLoader` moves each uint8 batch to the
model's device (through pinned memory with a non-blocking copy on CUDA: a quarter of the bytes of a
float batch) and applies ``RandomCrop(32, padding=4)`` (zero padding) + horizontal flip with p = 1/2
+ ``ToTensor`` scaling there as a few batched tensor ops. The crop offsets and flips of batch ``b``
of epoch ``e`` come from a CPU ``torch.Generator`` seeded by ``derive_seed(seed, e, b)``: they are
drawn for the *global* batch (``batch_size · world_size`` positions) and rank ``k`` uses positions
``[k·batch_size, (k+1)·batch_size)``. So a batch is a pure function of (seed, epoch, batch index,
rank): the same for any number of workers, any resume point and any device (the draws are made on
the CPU, so a CUDA run draws what a CPU test checks), and with the mixing sampler the ranks' shares
are exactly the slices of the batch one process would make.

Per-sample work that cannot be batched (AutoAugment's view, :class:`AutoAugmentView`) runs in the
worker processes with a per-image generator seeded by ``derive_seed(seed, part, epoch, image)`` -- one
``torch.Generator`` per image, no global RNG is seeded or restored.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

_MASK = (1 << 64) - 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on the integers ``parts`` only (a splitmix64 chain; cheap, no hashing)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK
        h ^= h >> 31
    return h >> 1


def crop_flip_params(generator: torch.Generator, n: int, padding: int = 4) -> Tuple[torch.Tensor, ...]:
    """(top, left, flip) for ``n`` images: offsets in [0, 2·padding], flip a bool with p = 1/2."""
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    return top, left, flip


def crop_flip_batch(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
                    padding: int = 4) -> torch.Tensor:
    """Batched zero-pad + crop + flip of uint8 images ``x`` (B×H×W×C, as stored) -> B×C×H×W uint8.

    The padded batch's crop windows are a strided view (``unfold``: B×C×(2p+1)×(2p+1)×H×W, no copy);
    one advanced index picks window (top_b, left_b) of image b, then flipped images are mirrored.
    Runs on whatever device ``x`` is on.
    """
    b, h, w, _ = x.shape
    # NCHW-contiguous while still uint8 (4x cheaper than on the float result), so the output is too
    padded = F.pad(x.permute(0, 3, 1, 2).contiguous(), (padding, padding, padding, padding))
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    dev = x.device
    out = windows[torch.arange(b, device=dev), :, top.to(dev), left.to(dev)]  # B×C×H×W
    return torch.where(flip.to(dev)[:, None, None, None], out.flip(-1), out)


def random_crop_flip(img: torch.Tensor, padding: int = 4,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One uint8 C×H×W image: zero-pad by ``padding``, random crop of the original size, flip w.p. 1/2."""
    top, left, flip = crop_flip_params(generator, 1, padding)
    return crop_flip_batch(img.permute(1, 2, 0)[None], top, left, flip, padding)[0]


class AutoAugmentView:
    """Crop + flip, then torchvision's AutoAugment (CIFAR-10 policy), drawing from a given generator.

    torchvision's ``AutoAugment.forward`` draws from the global torch RNG; this repeats its three draws
    (policy, probabilities, signs) from ``generator`` and applies the same ops, so the view is a
    function of the generator's seed alone.
    """

    def __init__(self):
        from torchvision.transforms import AutoAugment, AutoAugmentPolicy

        self.autoaugment = AutoAugment(AutoAugmentPolicy.CIFAR10)

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.autoaugment import _apply_op

        img = random_crop_flip(img, generator=generator)
        aa = self.autoaugment
        policy = aa.policies[int(torch.randint(len(aa.policies), (1,), generator=generator))]
        probs = torch.rand((2,), generator=generator)
        signs = torch.randint(2, (2,), generator=generator)
        space = aa._augmentation_space(10, tuple(img.shape[-2:]))
        for i, (op, p, magnitude_id) in enumerate(policy):
            if probs[i] <= p:
                magnitudes, signed = space[op]
                magnitude = float(magnitudes[magnitude_id]) if magnitude_id is not None else 0.0
                if signed and signs[i] == 0:
                    magnitude = -magnitude
                img = _apply_op(img, op, magnitude, interpolation=aa.interpolation, fill=None)
        return img


def read_ahead(read: Callable, keys: Iterable, threads: int) -> Iterator:
    """``map(read, keys)`` in order; with ``threads`` > 0 up to ``2·threads`` reads run ahead in threads.

    Threads share the process's arrays, so a batch is gathered once, straight into memory the main
    thread uses (a worker process sent it through a pipe: 1.4-1.8x the CPU per image of a plain
    batched crop + flip, docs/BENCHMARKS.md). numpy's gather releases the GIL, so page faults of a
    memory-mapped file that is not in the page cache overlap the training step instead of stalling it.
    """
    if threads == 0:
        yield from map(read, keys)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="advtrain-read") as pool:
        pending: deque = deque()
        for key in keys:
            pending.append(pool.submit(read, key))
            if len(pending) > 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class DeviceLoader:
    """Read uint8 batches, yield ``(x float32 in [0,1] B×3×H×W, y int64)`` on ``device``.

    ``dataset.__getitems__(key)`` for each key of ``batch_sampler`` (:class:`~advtrain.data.datasets.
    EpochBatches`) is a numpy ``(images uint8 B×H×W×C, labels, views)`` where ``views`` are
    uint8 C×H×W AutoAugment views (two-view mode: ``x`` is ``[basic; views]``, ``y`` twice) or None.
    ``processes`` is a ``DataLoader`` over the same dataset and keys whose worker processes do the
    reads (worth it where per-image work remains), or None: then ``threads`` reader threads
    (:func:`read_ahead`; 0: read in the iterating thread).
    ``sampler`` and ``batch_size`` mean what they mean on a DataLoader.
    """

    def __init__(self, dataset, batch_sampler, *, device, seed: int, crop: bool, two_view: bool, sampler,
                 batch_size: Optional[int], processes=None, threads: int = 0, rank: int = 0,
                 world_size: int = 1, padding: int = 4, pin_memory: Optional[bool] = None):
        self.dataset, self.batch_sampler = dataset, batch_sampler
        self.processes, self.threads = processes, threads
        self.device = torch.device(device)
        self.seed, self.crop, self.two_view, self.padding = int(seed), crop, two_view, padding
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        # what DataLoader would expose: the image sampler and per-rank batch size (None: batch sampler)
        self.sampler, self.batch_size = sampler, batch_size
        self.pin = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle and select the augmentation draws of ``epoch`` (see :func:`set_loader_epoch`)."""
        self.epoch = int(epoch)
        self.batch_sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from batch ``start`` on (a mid-epoch resume), the earlier ones unread.

        The same batches as skipping ``start`` batches of ``iter(loader)``, without reading and
        augmenting them: the draws of batch b depend on b, not on what was iterated before.
        """
        self.batch_sampler.start = int(start)
        batches = self.processes if self.processes is not None else \
            read_ahead(self.dataset.__getitems__, self.batch_sampler, self.threads)
        return (self.finish(batch, b) for b, batch in enumerate(batches, int(start)))

    def finish(self, batch, b: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """uint8 batch ``b`` of the current epoch -> the float batch on the device."""
        images, y, views = batch
        x, y = self._to_device(images), self._to_device(y)
        if self.crop:
            per_rank = self.batch_sampler.batch_size  # per rank; only the last batch may be shorter
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, b))
            top, left, flip = crop_flip_params(gen, per_rank * self.world_size, self.padding)
            lo, hi = self.rank * per_rank, self.rank * per_rank + len(y)
            x = crop_flip_batch(x, top[lo:hi], left[lo:hi], flip[lo:hi], self.padding)
        else:
            x = x.permute(0, 3, 1, 2).contiguous()
        x = x.float().div_(255.0)
        if self.two_view:
            x = torch.cat([x, self._to_device(views).float().div_(255.0)])
            y = torch.cat([y, y])
        return x, y

    def _to_device(self, array) -> torch.Tensor:
        """numpy -> tensor on the device; on CUDA through pinned memory with a non-blocking copy."""
        t = torch.from_numpy(array)
        if self.pin:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)
