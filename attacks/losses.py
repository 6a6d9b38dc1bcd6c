r"""Losses an attack maximises: ``loss_fn(logits_adv, y, logits_nat) -> scalar``.

A loss with attribute ``needs_nat = True`` (the default for any callable without the attribute)
receives the natural logits ``f(x)``, computed once per attack call under ``no_grad`` in the attack
mode; otherwise it receives ``None``. All losses are batch means (the reduction does not change
sign-gradient or normalised-gradient steps).

=========  ==========================================================================  =========
name       loss (per example, averaged over the batch)                                 needs_nat
=========  ==========================================================================  =========
``ce``     :math:`CE(a, y) = -\log softmax(a)_y`                                        no
``cw``     :math:`\max_{j≠y} a_j − a_y` (Carlini–Wagner margin, to maximise)           no
``kl``     :math:`KL(softmax(n) ‖ softmax(a))` (TRADES attack, SPEC §4.1)               yes
=========  ==========================================================================  =========

A training method's own attack loss is a callable its objective hands to :class:`attacks.PGD`
(e.g. :class:`advtrain.losses.DKLAttackLoss`): this package imports nothing from ``advtrain``.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import AttackError, unknown


def ce_loss(logits_adv: Tensor, y: Tensor, logits_nat: Optional[Tensor] = None) -> Tensor:
    """Mean cross-entropy of the adversarial logits w.r.t. the true labels."""
    return F.cross_entropy(logits_adv, y)


def cw_loss(logits_adv: Tensor, y: Tensor, logits_nat: Optional[Tensor] = None) -> Tensor:
    r"""Mean CW margin :math:`\max_{j≠y} a_j − a_y` (positive once the example is misclassified)."""
    true = logits_adv.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits_adv.masked_fill(F.one_hot(y, logits_adv.shape[1]).bool(), float("-inf"))
    return (others.amax(dim=1) - true).mean()


def kl_loss(logits_adv: Tensor, y: Tensor, logits_nat: Optional[Tensor] = None) -> Tensor:
    r"""TRADES attack loss :math:`\frac1B\sum_i KL(softmax(n_i) ‖ softmax(a_i))`, n held fixed."""
    if logits_nat is None:
        raise AttackError("the 'kl' attack loss needs the natural logits; give the loss "
                         "needs_nat=True")
    p_nat = F.softmax(logits_nat.detach(), dim=1)
    log_q = F.log_softmax(logits_adv, dim=1)
    return F.kl_div(log_q, p_nat, reduction="batchmean")


ce_loss.needs_nat = False
cw_loss.needs_nat = False
kl_loss.needs_nat = True


LOSSES = {"ce": ce_loss, "cw": cw_loss, "kl": kl_loss}


def resolve_loss(loss) -> Callable:
    """Map a loss name or callable to a callable; unknown names raise UnknownNameError."""
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]
    raise unknown("attack loss", loss, LOSSES)


def needs_nat(loss_fn: Callable) -> bool:
    """Whether ``loss_fn`` wants the natural logits (default True for foreign callables)."""
    return bool(getattr(loss_fn, "needs_nat", True))


def natural_logits(model, x, loss_fn: Callable):
    """The model's logits on the clean ``x`` (no graph) when ``loss_fn`` needs them, else None:
    computed once per attack call, shared by every step."""
    if not needs_nat(loss_fn):
        return None
    with torch.no_grad():
        return model(x).detach()


__all__ = ["ce_loss", "cw_loss", "kl_loss", "resolve_loss", "needs_nat", "natural_logits", "LOSSES"]
