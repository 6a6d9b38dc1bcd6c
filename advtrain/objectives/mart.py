"""MART (Wang et al., ICLR 2020, "Improving Adversarial Robustness Requires Revisiting Misclassified Examples").

Loss, with ``p' = softmax f(x')``, ``p = softmax f(x)`` and ``k_i = argmax_{k != y_i} p'_ik``::

    L = (1/B) sum_i [ -log p'_{i,y_i} - log(1.0001 - p'_{i,k_i} + 1e-12) ]              (boosted CE)
        + beta (1/B) sum_i sum_j p_ij (log p_ij - log(p'_ij + 1e-12)) * (1.0000001 - p_{i,y_i})
                                                                                       (misclassification-aware KL)

The constants 1.0001, 1e-12 and 1.0000001 are the stabilisers of the authors' code
(``YisenWang/MART``, ``mart.py``), kept so the loss is theirs to the last digit: without them the
margin term is ``-log 0`` once ``p'_k`` reaches 1, and a sample with ``p_y = 1`` would get no KL weight.
As there, the clean input is forwarded first and the adversarial one second (the order matters for
BatchNorm's running statistics), gradients flow through every factor, and the attack maximises CE
from ``x + 0.001 N(0, I)``.

Example::

    obj = build_objective("mart", dataset="cifar10", num_classes=10, beta=6.0)
    loss, terms = obj.loss(model, x, obj.perturb(model, x, y), y)   # terms: bce_adv, kl_weighted, ...
"""
from __future__ import annotations

import torch

from dataclasses import dataclass

from advtrain.objectives.base import NONNEG, Objective, ObjectiveOptions, finish_terms, opt
from advtrain.objectives.pgd_at import ATTACK_LOSSES

# the authors' stabilisers (mart.py): log(1.0001 - p' + 1e-12), log(p' + 1e-12), (1.0000001 - p_y)
_MARGIN_ONE = 1.0001
_TINY = 1e-12
_WEIGHT_ONE = 1.0000001


def boosted_ce(logits_adv: torch.Tensor, y: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
    """``ce - mean_i log(1.0001 - p'_{i,k_i} + 1e-12)`` with ``k_i`` the most likely wrong class."""
    probs = logits_adv.softmax(1)
    wrong = probs.detach().clone()
    wrong.scatter_(1, y[:, None], -1.0)
    k = wrong.argmax(1)
    margin = -torch.log(_MARGIN_ONE - probs.gather(1, k[:, None]).squeeze(1) + _TINY)
    return ce + margin.mean()


def weighted_kl(logits_adv: torch.Tensor, logits_nat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(1/B) sum_i sum_j p_ij (log p_ij - log(p'_ij + 1e-12)) (1.0000001 - p_{i,y_i})``.

    As ``nn.KLDivLoss(reduction="none")(log(p' + 1e-12), p)`` in the authors' code (``0 log 0 = 0``);
    gradients flow through both models' outputs.
    """
    p_nat = logits_nat.softmax(1)
    p_adv = logits_adv.softmax(1)
    kl = (torch.xlogy(p_nat, p_nat) - p_nat * torch.log(p_adv + _TINY)).sum(1)
    true_prob = p_nat.gather(1, y[:, None]).squeeze(1)
    return (kl * (_WEIGHT_ONE - true_prob)).mean()


@dataclass(frozen=True)
class MARTOptions(ObjectiveOptions):
    beta: float = opt(6.0, **NONNEG)  # YisenWang/MART train_wrn_mart.py --beta
    attack_loss: str = opt("ce", choices=ATTACK_LOSSES)  # mart.py: the attack maximises CE
    # attack: the trainer-wide DKL executed schedule from x + 0.001 N(0, I)


class MART(Objective):
    """Boosted CE on adversarial inputs plus beta times the misclassification-weighted KL."""

    name = "mart"
    Options = MARTOptions

    def __init__(self, options, attack, **kwargs):
        super().__init__(options, attack, **kwargs)
        self.beta = options.beta
        self.attack = self.make_attack(options.attack_loss)

    def loss(self, model, x, x_adv, y, *, update_state=True):
        logits_nat = model(x)  # clean first, as the authors' code (BatchNorm statistics)
        logits_adv = model(x_adv)
        bce = boosted_ce(logits_adv, y, self.ce(logits_adv, y))
        kl = weighted_kl(logits_adv, logits_nat, y)
        loss = bce + self.beta * kl
        return loss, finish_terms(loss, logits_adv, y, bce_adv=bce, kl_weighted=kl, rob=self.beta * kl)
