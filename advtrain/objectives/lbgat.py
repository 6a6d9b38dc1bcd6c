"""LBGAT (Cui et al., ICCV 2021, "Learnable Boundary Guided Adversarial Training"), SPEC §4.4.

A natural model ``f_n`` (ResNet-18 by default) is trained jointly with the robust model ``f_r``; it is a
submodule of the objective, so it is saved with the objective's ``state_dict()``, and its parameters
are returned by ``extra_parameters()`` for the optimiser. Loss (all train mode, nothing detached)::

    L = MSE_mean(f_r(x'), f_n(x)) + CE(f_n(x), y) + beta * (1/B) sum_i KL(softmax f_r(x_i) || softmax f_r(x'_i))

with the MSE averaged over B*C elements and no label CE on ``f_r``. The forwards run in the reference
order ``f_r(x')``, ``f_r(x)``, ``f_n(x)``; ``f_r(x)`` runs even for ``beta = 0`` (LBGAT0), where it
only updates the robust model's BatchNorm statistics, as in the reference code. The attack is the
TRADES KL attack on ``f_r``.
With ``update_state=False`` (the AWP proxy) the natural model's BN running statistics are left untouched.

Example::

    obj = build_objective("lbgat", dataset="cifar100", num_classes=100, beta=6.0)
    opt = torch.optim.SGD([*model.parameters(), *obj.extra_parameters()], lr=0.1, momentum=0.9)
"""
from __future__ import annotations

import torch.nn.functional as F

from dataclasses import dataclass

from advtrain.objectives.base import (DKL_ATTACK, NONNEG, Objective, ObjectiveOptions, finish_terms,
                                      frozen_bn_stats, opt)


@dataclass(frozen=True)
class LBGATOptions(ObjectiveOptions):
    beta: float = opt(6.0, **NONNEG)  # SPEC §4.4 (LBGAT6; LBGAT0: 0)
    natural_arch: str = opt("resnet-18", arch=True)  # the natural model f_n
    # the TRADES attack of train_lbgat_cifar100.py (dvlab-research/LBGAT): eps 0.031, step 0.007
    ATTACK = {**DKL_ATTACK, "eps": 0.031, "step_size": 0.007}


class LBGAT(Objective):
    """Robust model guided by the logits of a jointly trained natural model."""

    name = "lbgat"
    Options = LBGATOptions

    def __init__(self, options, attack, *, natural_model=None, **kwargs):
        super().__init__(options, attack, **kwargs)
        self.beta = options.beta
        if natural_model is None:
            from advtrain.models import create_model

            natural_model = create_model(options.natural_arch, dataset=self.dataset,
                                         num_classes=self.num_classes)
        self.natural_model = natural_model
        self.attack = self.make_attack("kl")

    def extra_parameters(self):
        return [p for p in self.natural_model.parameters() if p.requires_grad]

    def loss(self, model, x, x_adv, y, *, update_state=True):
        logits_adv = model(x_adv)
        logits_nat = model(x)  # always: its train-mode forward updates f_r's BN statistics
        self.natural_model.train(model.training)
        with frozen_bn_stats(self.natural_model, enabled=not update_state):
            logits_guide = self.natural_model(x)
        mse = F.mse_loss(logits_adv, logits_guide)
        ce_natural_model = self.ce(logits_guide, y)
        loss = mse + ce_natural_model
        terms = {"mse": mse, "ce_natural_model": ce_natural_model}
        if self.beta > 0:
            from advtrain.losses import trades_kl

            kl = trades_kl(logits_adv, logits_nat)
            loss = loss + self.beta * kl
            terms.update(kl=kl, rob=self.beta * kl)
        return loss, finish_terms(loss, logits_adv, y, **terms)
