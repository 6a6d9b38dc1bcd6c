r"""GKL-KD for robustness (this toolkit, SPEC §12): RSLAD's structure with each KL replaced by GKL.

With the frozen teacher's natural logits ``t = T(x)`` and class weights ``u_i = W[y_i]`` from a class
prior of the teacher (``W`` = per-class mean of ``softmax(t / prior_T)`` over the previous epoch,
uniform in epoch 1; SPEC §2.6)::

    L = adv_weight * GKL(S(x'), t) + nat_weight * GKL(S(x), t)
    GKL(s, t) = beta * sum_i sum_{j,k} u_ij^g u_ik^g ((t_ij - t_ik) - (s_ij - s_ik))^2
                       / (4 sum_i (sum_j u_ij^g)^2)
              - alpha * (1/B) sum_i sum_j softmax(t_i / tau)_j log softmax(s_i / tau)_j

(:func:`advtrain.losses.gkl_loss`; ``g = gamma``, ``tau = loss_T``, code letters: alpha = soft CE,
beta = wMSE). The attack maximises ``GKL(S(x'), t)`` with the same weights from ``x + 0.001 N(0, I)``.
Defaults are ``GKL_KD``'s (alpha = beta = gamma = 1, tau = prior_T = 1, class prior on) with
RSLAD's weights 5/6 and 1/6 and no hard-label CE; ``GKL_KD``'s KD warm-up is not used (RSLAD has
none). ``use_prior=False`` uses the per-sample ``softmax(t / prior_T)`` instead of ``W[y]``.
The prior is a buffer, saved and resumed with the objective; AWP's proxy loss leaves it alone.

Example::

    obj = build_objective("gkl_kd", dataset="cifar10", num_classes=10, teacher=teacher)
    loss, terms = obj.loss(model, x, obj.perturb(model, x, y), y)   # terms: gkl_adv, gkl_nat, ...
    obj.on_epoch_end()                                               # prior for the next epoch
"""
from __future__ import annotations

import torch.nn.functional as F

from dataclasses import dataclass

from advtrain.objectives.base import NONNEG, POSITIVE, ObjectiveOptions, finish_terms, opt
from advtrain.objectives.distill import KD_ATTACK, RSLAD_OPTIM, DistillObjective


@dataclass(frozen=True)
class GKLKDOptions(ObjectiveOptions):
    """GKL_KD's loss options (SPEC §2.6) in RSLAD's structure, with RSLAD's attack and optimiser."""

    alpha: float = opt(1.0, **NONNEG)  # soft-CE weight
    beta: float = opt(1.0, **NONNEG)  # wMSE weight
    gamma: float = opt(1.0, **NONNEG)  # weight power
    loss_T: float = opt(1.0, **POSITIVE)
    prior_T: float = opt(1.0, **POSITIVE)
    use_prior: bool = True
    prior_momentum: float = opt(1.0, gt=0, max=1)
    adv_weight: float = opt(5 / 6, **NONNEG)  # RSLAD's weights (zibojia/RSLAD rslad_loss.py)
    nat_weight: float = opt(1 / 6, **NONNEG)
    ATTACK = {**KD_ATTACK, "init": "normal"}  # RSLAD's attack (SPEC §12)
    OPTIM = RSLAD_OPTIM


class GKLKD(DistillObjective):
    """Generalised-KL distillation from the teacher's natural logits (adversarial + natural)."""

    name = "gkl_kd"
    Options = GKLKDOptions

    def __init__(self, options, attack, **kwargs):
        super().__init__(options, attack, **kwargs)
        from advtrain.losses import ClassPrior

        o = options
        self.alpha, self.beta, self.gamma, self.loss_T = o.alpha, o.beta, o.gamma, o.loss_T
        self.prior_T, self.use_prior = o.prior_T, o.use_prior
        self.adv_weight, self.nat_weight = o.adv_weight, o.nat_weight
        self.prior = ClassPrior(self.num_classes, momentum=o.prior_momentum)
        self.attack = self.make_attack(self.teacher_target(lambda a, y, t: self.gkl(a, t, y)[0]))

    def weights(self, t, y):
        """Class weights: the prior's ``W[y]``, or the per-sample ``softmax(t / prior_T)``."""
        if self.use_prior:
            return self.prior.weights(y).to(t.dtype)
        return F.softmax(t.detach() / self.prior_T, dim=1)

    def gkl(self, logits_student, t, y):
        """``(GKL(s, t), {"wmse", "soft_ce"})`` with this objective's weights and options."""
        from advtrain.losses import gkl_loss

        return gkl_loss(logits_student, t, self.weights(t, y), alpha=self.alpha, beta=self.beta,
                        gamma=self.gamma, temperature=self.loss_T, return_terms=True)

    def loss(self, model, x, x_adv, y, *, update_state=True):
        t = self.teacher_logits(x)
        logits_adv = model(x_adv)
        logits_nat = model(x)
        gkl_adv, terms_adv = self.gkl(logits_adv, t, y)
        gkl_nat, terms_nat = self.gkl(logits_nat, t, y)
        if update_state:  # after the weights of this step were taken: W changes only per epoch anyway
            self.prior.update(t, y, self.prior_T)
        loss = self.adv_weight * gkl_adv + self.nat_weight * gkl_nat
        terms = {"gkl_adv": gkl_adv, "gkl_nat": gkl_nat, "wmse_adv": terms_adv["wmse"],
                 "soft_ce_adv": terms_adv["soft_ce"]}
        return loss, finish_terms(loss, logits_adv, y, **terms)

    def on_epoch_end(self, reduce=None):
        """The epoch's teacher probabilities per class become the next epoch's prior."""
        self.prior.end_epoch(reduce)
