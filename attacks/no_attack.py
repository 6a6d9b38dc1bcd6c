"""``none``: the training attack of a clean regime, ``x_adv = x``.

Takes the budget the training schedule hands every attack (checked as any other: eps >= 0, eps 0
allowed) and ignores it; its one option, ``norm``, names the threat model the run's per-epoch PGD
test measures. Inputs are checked as for every attack (images in [0, 1]).

Example::

    >>> clean = NoAttack()
    >>> torch.equal(clean(model, x, y), x)
    True
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .base import NORMS, Attack
from .options import setting


@dataclass(frozen=True)
class NoAttackOptions:
    norm: str = setting("Linf", choices=NORMS)  # the threat model of the per-epoch test only


class NoAttack(Attack):
    """Returns the clean input unchanged (a copy); the loss a training method gives it is unused."""

    Options = NoAttackOptions

    def __init__(self, eps: float = 0.0, norm: str = NoAttackOptions.norm, loss=None):
        super().__init__(eps, norm=norm)
        self.loss = loss

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return x.clone()
