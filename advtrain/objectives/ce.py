"""Cross-entropy on the training attack's inputs, with the optional GradAlign regulariser.

``L = CE(f(x'), y)`` (optional label smoothing), ``x'`` from whatever training attack the config
names: the clean input with ``attack: {name: none}`` (standard training, the "Standard" model of
RobustBench tables), FGSM-RS / N-FGSM examples for single-step adversarial training (SPEC §13.1,
§13.2), APGD-CE for revisiting-at's 2-step APGD training (SPEC §13.4), PGD for Madry's PGD-AT.

GradAlign (Andriushchenko & Flammarion, NeurIPS 2020), ``grad_align: λ > 0`` (SPEC §13.3)::

    L = CE(f(x'), y) + λ·(1 − mean_i cos(g1_i, g2_i))
    g1 = ∇_x CE(f(x), y)            detached: the reference takes it at the FGSM start point, which is x
                                    with its attack_init=zero (every GradAlign command)
    g2 = ∇_η CE(f(x + η), y)        η ~ U(−ε, ε)^d, NOT clamped to [0,1]; create_graph (double backprop)

with examples whose g1 or g2 is exactly zero left out of the mean (reference). Differences from the
reference: g1 costs one extra forward/backward here (the reference reuses its FGSM's gradient), and
that forward uses batch statistics without recording them in BatchNorm, so the running statistics
see the same passes as in the reference (attack, x + η, x'); the order of the passes differs (x'
first here). ε is the training attack's radius of the epoch.

Example::

    obj = build_objective("ce", dataset="cifar10", num_classes=10, grad_align=0.2)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from advtrain.losses import grad_align_cosine, input_grad
from advtrain.objectives.base import (DKL_ATTACK, Objective, ObjectiveOptions, finish_terms,
                                      frozen_bn_stats, opt)


@dataclass(frozen=True)
class CEOptions(ObjectiveOptions):
    # GradAlign's lambda; 0 = off. The paper's CIFAR-10 values: 0.02*10^(eps/8), eps in /255
    # (0.2 at 8/255, 2.0 at 16/255; sh/exps_diff_eps_*.sh, SPEC §13.3)
    grad_align: float = opt(0.0, min=0)
    # PGD-AT's attack with a uniform start when a config names no attack (as pgd_at)
    ATTACK = {**DKL_ATTACK, "init": "uniform"}


class CE(Objective):
    """Cross entropy on the training attack's inputs (+ GradAlign when ``grad_align > 0``)."""

    name = "ce"
    Options = CEOptions

    def __init__(self, options, attack, **kwargs):
        super().__init__(options, attack, **kwargs)
        self.attack = self.make_attack("ce")
        self.grad_align = float(options.grad_align)
        self.eps = float(attack.eps)

    def set_attack_budget(self, eps, step_size, steps):
        super().set_attack_budget(eps, step_size, steps)
        self.eps = float(eps)  # GradAlign's eta radius follows the training radius

    def loss(self, model, x, x_adv, y, *, update_state=True):
        logits_adv = model(x_adv)
        ce = self.ce(logits_adv, y)
        if self.grad_align <= 0:
            return ce, finish_terms(ce, logits_adv, y, ce_adv=ce)
        with frozen_bn_stats(model):
            g1 = input_grad(model, x, y)
        eta = torch.empty_like(x).uniform_(-self.eps, self.eps)
        g2 = input_grad(model, x + eta, y, create_graph=True)
        align = grad_align_cosine(g1, g2)
        loss = ce + self.grad_align * align
        return loss, finish_terms(loss, logits_adv, y, ce_adv=ce, grad_align=align)
