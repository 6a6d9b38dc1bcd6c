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

with examples whose g1 or g2 is exactly zero left out of the mean (reference). g1 is the training
attack's own first gradient when that is the gradient at x the reference reuses (an FGSM / PGD
attack from x, ``init: none``, on CE, in train mode: ``attack: {name: fgsm, bn_mode: train}`` as in
configs/grad_align_cifar10.yaml), so a step costs the reference's passes: attack, x', x + η. With
any other training attack (random start, another loss or BN mode), and in AWP's proxy loss, g1 is
taken separately at x, with batch statistics that are not recorded in BatchNorm (one more
forward/backward; the running statistics still see only the reference's passes). The order of the
passes differs (x' before x + η here). ε is the training attack's radius of the epoch.

Example::

    obj = build_objective("ce", dataset="cifar10", num_classes=10, grad_align=0.2)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from attacks import PGD
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
        # the attack's first gradient is the g1 the reference reuses: CE at x, train-mode BN
        a = self.attack
        self.reuses_attack_grad = (self.grad_align > 0 and isinstance(a, PGD) and a.init == "none"
                                   and a.loss == "ce" and a.bn_mode == "train")
        if self.reuses_attack_grad:
            a.keep_start_grad = True

    def set_attack_budget(self, eps, step_size, steps):
        super().set_attack_budget(eps, step_size, steps)
        self.eps = float(eps)  # GradAlign's eta radius follows the training radius

    def loss(self, model, x, x_adv, y, *, update_state=True):
        logits_adv = model(x_adv)
        ce = self.ce(logits_adv, y)
        if self.grad_align <= 0:
            return ce, finish_terms(ce, logits_adv, y, ce_adv=ce)
        g1 = self._attack_grad_at(x) if update_state else None
        if g1 is None:
            with frozen_bn_stats(model):
                g1 = input_grad(model, x, y)
        eta = torch.empty_like(x).uniform_(-self.eps, self.eps)
        g2 = input_grad(model, x + eta, y, create_graph=True)
        align = grad_align_cosine(g1, g2)
        loss = ce + self.grad_align * align
        return loss, finish_terms(loss, logits_adv, y, ce_adv=ce, grad_align=align)

    def _attack_grad_at(self, x):
        """The training attack's gradient at ``x`` from its last call on this same batch, or None."""
        kept = getattr(self.attack, "start_grad", None) if self.reuses_attack_grad else None
        if kept is None:
            return None
        x0, grad = kept
        # the attack keeps a detached view of the batch it was given: the same storage is the same
        # batch (the kept view holds it, so no other batch can live there); else compare the values
        same_view = (x0.data_ptr() == x.data_ptr() and x0.shape == x.shape and x0.stride() == x.stride()
                     and x0.dtype == x.dtype)
        return grad if same_view or (x0.shape == x.shape and torch.equal(x0, x)) else None
