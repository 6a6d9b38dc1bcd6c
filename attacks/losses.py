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
``dkl``    :class:`DKLAttackLoss` ``(1, 0)`` (= the CIFAR-10 DKL/GKL attack, SPEC §2.3)  yes
=========  ==========================================================================  =========
"""
from __future__ import annotations

from typing import Callable, Optional

import torch.nn.functional as F
from torch import Tensor

from advtrain.errors import InputError, unknown


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
        raise InputError("the 'kl' attack loss needs the natural logits; give the loss "
                         "needs_nat=True")
    p_nat = F.softmax(logits_nat.detach(), dim=1)
    log_q = F.log_softmax(logits_adv, dim=1)
    return F.kl_div(log_q, p_nat, reduction="batchmean")


ce_loss.needs_nat = False
cw_loss.needs_nat = False
kl_loss.needs_nat = True


class DKLAttackLoss:
    r"""GKL/DKL attack loss :math:`α_a L_s(a, n) + β_a L_w(a, n)` (SPEC §2.3), via ``gkl_loss``.

    ``weights_fn(y) -> B×C`` gives the class weights (rows of the current class prior ``W[y]``,
    raised to ``gamma_a`` inside ``gkl_loss``); ``None`` uses the per-sample ``softmax(n)``.
    Reference values: CIFAR-10 ``(α_a, β_a) = (1, 0)`` (exactly the TRADES KL direction),
    CIFAR-100 ``(1, 1)``; ``γ_a = 1`` in both.

    Example::

        loss = DKLAttackLoss(1.0, 1.0, weights_fn=lambda y: prior.weights(y))
        attack = PGD(eps=8/255, alpha=2/255, steps=5, loss=loss, init="normal")
    """

    needs_nat = True

    def __init__(self, alpha_a: float, beta_a: float, gamma_a: float = 1.0,
                 weights_fn: Optional[Callable[[Tensor], Tensor]] = None):
        for name, value in (("alpha_a", alpha_a), ("beta_a", beta_a), ("gamma_a", gamma_a)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise InputError(f"DKLAttackLoss {name} must be a number >= 0, got {value!r}")
        self.alpha_a, self.beta_a, self.gamma_a = float(alpha_a), float(beta_a), float(gamma_a)
        self.weights_fn = weights_fn

    def __call__(self, logits_adv: Tensor, y: Tensor, logits_nat: Optional[Tensor]) -> Tensor:
        from advtrain.losses import gkl_loss  # lazy: advtrain.losses imports nothing from here

        if logits_nat is None:
            raise InputError("DKLAttackLoss needs the natural logits; keep needs_nat=True")
        weights = None if self.weights_fn is None else self.weights_fn(y)
        if weights is not None:
            weights = weights.detach()
        return gkl_loss(logits_adv, logits_nat.detach(), weights, alpha=self.alpha_a,
                        beta=self.beta_a, gamma=self.gamma_a)

    def __repr__(self) -> str:
        return (f"DKLAttackLoss(alpha_a={self.alpha_a}, beta_a={self.beta_a}, "
                f"gamma_a={self.gamma_a}, weights_fn={self.weights_fn!r})")


LOSSES = {"ce": ce_loss, "cw": cw_loss, "kl": kl_loss}


def resolve_loss(loss) -> Callable:
    """Map a loss name or callable to a callable; unknown names raise UnknownNameError."""
    if callable(loss):
        return loss
    if loss == "dkl":
        return DKLAttackLoss(1.0, 0.0)
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]
    raise unknown("attack loss", loss, [*LOSSES, "dkl"])


def needs_nat(loss_fn: Callable) -> bool:
    """Whether ``loss_fn`` wants the natural logits (default True for foreign callables)."""
    return bool(getattr(loss_fn, "needs_nat", True))


__all__ = ["ce_loss", "cw_loss", "kl_loss", "DKLAttackLoss", "resolve_loss", "needs_nat", "LOSSES"]
