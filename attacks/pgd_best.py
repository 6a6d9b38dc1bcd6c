r"""PGD that returns each example's highest-loss iterate (training attack ``pgd_best``).

The iterates are the start :math:`x_0` (``init``: ``"none"`` makes it the clean point; the
``"normal"`` start is scored unclipped and returned clipped into the ball and [0, 1]) and
:math:`x_1, …, x_K` of :class:`attacks.PGD` (the same steps, the same random start); for every
example the one with the largest *per-example* attack loss is returned (ties keep the earlier one).
The loss of :math:`x_0 … x_{K-1}` comes from the forward pass each step makes anyway; :math:`x_K`
costs one more forward (no backward).

What the references execute:

- revisiting-at (Singh et al. 2023, ``autopgd_train_clean.py``): per example, among {clean point,
  x_1, x_2} of a 2-iteration APGD -- the same rule (per example, strict improvement);
- ARES 2.0 (``ares/utils/adv.py`` ``replace_best``, ``use_best=True``): per example only when its loss
  is per example (criterion ``regular``). Its ImageNet recipe attacks with the ``mixup`` criterion,
  timm's ``SoftTargetCrossEntropy``, a batch *mean*: there the whole batch moves to an iterate
  iff the batch-mean loss rose, and the last iterate's loss is computed on un-normalised input. This
  attack keeps the per-example rule (the one ARES intends for per-example losses); the batch-level
  selection is not reproduced.

Per-example losses: ``"ce"`` (also soft targets, as ``F.cross_entropy`` reads them), ``"cw"``,
``"kl"``; a callable loss must offer ``per_sample(logits_adv, y, logits_nat) -> (B,)``.

Example::

    >>> attack = BestPGD(eps=4/255, alpha=8/765, steps=3, init="uniform")
    >>> x_best = attack(model, x, y)
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import AttackError, project
from .losses import natural_logits, resolve_loss
from .pgd import PGD, PGDOptions


def _ce(logits_adv: Tensor, y: Tensor, logits_nat: Optional[Tensor] = None) -> Tensor:
    return F.cross_entropy(logits_adv, y, reduction="none")


def _cw(logits_adv: Tensor, y: Tensor, logits_nat: Optional[Tensor] = None) -> Tensor:
    true = logits_adv.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits_adv.masked_fill(F.one_hot(y, logits_adv.shape[1]).bool(), float("-inf"))
    return others.amax(dim=1) - true


def _kl(logits_adv: Tensor, y: Tensor, logits_nat: Optional[Tensor] = None) -> Tensor:
    p_nat = F.softmax(logits_nat.detach(), dim=1)
    return F.kl_div(F.log_softmax(logits_adv, dim=1), p_nat, reduction="none").sum(1)


#: the per-example form of each named loss (its batch mean is the named loss)
PER_SAMPLE = {"ce": _ce, "cw": _cw, "kl": _kl}


def per_sample_loss(loss) -> Callable:
    """The per-example form of ``loss`` (a name of :data:`PER_SAMPLE` or a callable with ``per_sample``)."""
    if isinstance(loss, str):
        resolve_loss(loss)  # an unknown name: the usual error
        return PER_SAMPLE[loss]
    fn = getattr(loss, "per_sample", None)
    if not callable(fn):
        raise AttackError(f"pgd_best needs a per-example attack loss ({', '.join(PER_SAMPLE)}, or a "
                          f"callable with per_sample); {loss!r} has none: use attack.name pgd")
    return fn


class BestPGD(PGD):
    """:class:`attacks.PGD` returning each example's highest-loss iterate (module docstring)."""

    Options = PGDOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        per_sample_loss(self.loss)  # checked when built

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        loss_fn = per_sample_loss(self.loss)
        logits_nat = natural_logits(model, x, resolve_loss(self.loss))
        x_adv = self.initial_point(x)  # PGD's start (the "normal" one unclipped, as PGD steps from it)
        best = project(x_adv.detach(), x, self.eps, self.norm)
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        view = (-1,) + (1,) * (x.dim() - 1)
        for k in range(self.steps):
            x_req = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                per = loss_fn(model(x_req), y, logits_nat)
                if per.dim() != 1 or per.shape[0] != x.shape[0]:
                    raise AttackError(f"per-example attack loss must return shape ({x.shape[0]},), got "
                                      f"{tuple(per.shape)}")
                (grad,) = torch.autograd.grad(per.mean(), x_req)
            candidate = x_adv.detach() if k else project(x_adv.detach(), x, self.eps, self.norm)
            best, best_loss = self._keep(best, best_loss, candidate, per.detach(), view)
            x_adv = project(x_adv.detach() + self.alpha * self.direction(grad), x, self.eps, self.norm)
        with torch.no_grad():
            per = loss_fn(model(x_adv), y, logits_nat)
        best, _ = self._keep(best, best_loss, x_adv.detach(), per, view)
        return best

    @staticmethod
    def _keep(best, best_loss, x_new, loss_new, view):
        better = loss_new.float() > best_loss
        return torch.where(better.view(view), x_new, best), torch.where(better, loss_new.float(), best_loss)
