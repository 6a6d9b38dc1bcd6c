"""Global seeding and the real/generated mixing batch sampler of DM-Improves-AT (SPEC §6).

:class:`MixedSampler` yields lists of dataset indices. The dataset is the concatenation
``[real (n_real) ; generated (n_gen)]``, so real indices are ``0..n_real-1`` and generated ones
``n_real..n_real+n_gen-1``. With global batch ``B = batch_size·world_size`` every global batch holds

    g = int(fraction·B) generated indices, drawn uniformly *with replacement*, and
    B − g real indices, read from a stream of epoch-wise reshuffled permutations of the real set
    (when a permutation is exhausted the next one starts: the real set cycles),

shuffled together; rank ``k`` takes positions ``[k·batch_size, (k+1)·batch_size)``. So ``batch_size``
is per rank (as for ``DataLoader`` under DDP), the ranks' shares are disjoint slices, and their union is
exactly the batch a single process with ``batch_size·world_size`` draws. An epoch is
``ceil(epoch_images / B)`` batches, with ``epoch_images`` = the real set size by default
(50,000 for CIFAR, whatever the generated-set size). All draws depend only on (seed, epoch).
"""
from __future__ import annotations

import math
import random
from typing import Iterator, List, Optional

import numpy as np
import torch

from advtrain.data.augment import derive_seed
from advtrain.errors import InputError


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, numpy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _PermutationStream:
    """Endless stream of indices 0..n-1: one random permutation after another."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator
        self.perm, self.pos = torch.randperm(n, generator=generator), 0

    def take(self, k: int) -> torch.Tensor:
        parts = []
        while k > 0:
            if self.pos == self.n:
                self.perm, self.pos = torch.randperm(self.n, generator=self.generator), 0
            step = min(k, self.n - self.pos)
            parts.append(self.perm[self.pos:self.pos + step])
            self.pos, k = self.pos + step, k - step
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


class MixedSampler(torch.utils.data.Sampler):
    """Batch sampler mixing real and generated images (see the module docstring)."""

    def __init__(self, n_real: int, n_gen: int, batch_size: int, fraction: float = 0.7, *,
                 seed: int = 0, epoch_images: Optional[int] = None, rank: int = 0, world_size: int = 1):
        if not 0.0 <= fraction <= 1.0:
            raise InputError(f"synthetic fraction {fraction} outside [0, 1]; use e.g. 0.7")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise InputError(f"need batch_size >= 1 and 0 <= rank < world_size, got batch_size={batch_size}, "
                             f"rank={rank}, world_size={world_size}")
        self.n_real, self.n_gen, self.batch_size = int(n_real), int(n_gen), int(batch_size)
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, int(seed), 0
        global_bs = self.batch_size * world_size
        self.n_gen_batch = int(fraction * global_bs)
        self.n_real_batch = global_bs - self.n_gen_batch
        if self.n_gen_batch and self.n_gen < 1:
            raise InputError(f"synthetic fraction {fraction} needs generated images but none were given; "
                             f"pass a synthetic npz or set the fraction to 0")
        if self.n_real_batch and self.n_real < 1:
            raise InputError("the real training set is empty; check --data-root/--subset/--holdout")
        epoch_images = self.n_real if epoch_images is None else int(epoch_images)
        self.num_batches = max(1, math.ceil(epoch_images / global_bs))

    def set_epoch(self, epoch: int) -> None:
        """Use the draws of ``epoch`` on the next iteration."""
        self.epoch = int(epoch)

    def global_batches(self) -> Iterator[torch.Tensor]:
        """The epoch's global batches (all ranks' indices, before slicing)."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, -1))
        real = _PermutationStream(self.n_real, generator) if self.n_real_batch else None
        for _ in range(self.num_batches):
            parts = [real.take(self.n_real_batch)] if real is not None else []
            if self.n_gen_batch:
                parts.append(self.n_real + torch.randint(self.n_gen, (self.n_gen_batch,), generator=generator))
            batch = torch.cat(parts)
            yield batch[torch.randperm(len(batch), generator=generator)]

    def __iter__(self) -> Iterator[List[int]]:
        lo = self.rank * self.batch_size
        for batch in self.global_batches():
            yield batch[lo:lo + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.num_batches
