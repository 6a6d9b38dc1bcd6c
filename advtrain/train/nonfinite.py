"""The non-finite guard of a training step (``nan_policy``): which term went bad, one decision for
every DDP rank, and the BN buffers to put back when a batch is skipped."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn

from advtrain import distributed as D
from advtrain.errors import AdvtrainError


class NonFiniteError(AdvtrainError):
    """Training diverged (non-finite loss or weights), or trained nothing."""


def first_nonfinite(loss: torch.Tensor, terms: Dict[str, torch.Tensor]) -> Optional[str]:
    """Name of the first non-finite term (``loss`` first), None when all are finite."""
    names = ["loss"] + [k for k in terms if k != "loss"]
    values = [loss.detach()] + [terms[k] for k in names[1:]]
    ok = torch.stack([torch.isfinite(v.detach().float()).all() for v in values]).tolist()
    for name, good in zip(names, ok):
        if not good:
            return name
    return None


def decided_together(bad: Optional[str]) -> Optional[str]:
    """What to report for a non-finite loss, the same decision on every rank (None: all finite).

    Under DDP a rank that skipped ``backward`` alone would leave the others waiting in the
    gradient all-reduce, and a rank that stopped alone would leave them waiting until the
    process-group timeout, so the flag is all-reduced first.
    """
    ranks = D.ranks_where(bad is not None)
    if not ranks:
        return None
    if bad is not None:
        return f"loss term {bad!r}" + (f" on rank {D.rank()}" if D.is_initialized() else "")
    return f"loss on rank {ranks[0]}"


def finite_params(optimizer: torch.optim.Optimizer) -> bool:
    params = [p for g in optimizer.param_groups for p in g["params"]]
    return bool(torch.stack([torch.isfinite(p.detach()).all() for p in params]).all())


def snapshot_buffers(*modules: nn.Module):
    return [(b, b.detach().clone()) for m in modules for b in m.buffers()]


def restore_buffers(saved) -> None:
    with torch.no_grad():
        for buf, copy in saved or []:
            buf.copy_(copy)
