r"""Clean knowledge distillation (no attack): ``ikl_kd`` (DKLv1 ``IKL_KD.py``), ``gkl_kd_clean``
(DKLv2 ``GKL_KD.py``) and the Hinton baseline ``kl_kd`` (mdistiller ``KD.py``), SPEC §2.6.

With student logits ``s = S(x)`` (one train-mode forward of the clean batch), the frozen teacher's
``t = T(x)`` (one eval-mode forward per batch, shared with AWP's proxy loss, see
:mod:`advtrain.objectives.distill`) and ``e`` the 1-indexed epoch::

    ikl_kd / gkl_kd_clean:
        L = ce_weight * CE(s, y) + min(e / warmup, 1) * (alpha * softCE_T(s, t) + beta * wMSE(s, t))
        softCE_T = -(1/B) sum_i sum_j softmax(t_i / loss_T)_j log softmax(s_i / loss_T)_j  (no T^2)
        wMSE     = sum_i sum_{j,k} u_ij u_ik ((t_ij - t_ik) - (s_ij - s_ik))^2 / (4 Z)
    kl_kd:
        L = ce_weight * CE(s, y) + kd_weight * loss_T^2 * (1/B) sum_i KL(softmax(t_i/T) || softmax(s_i/T))

The wMSE is on raw logits, with no stop-gradient on the student's differences. Weights: with
``use_prior`` (the reference's ``GI``) ``u_i = W[y_i]``, ``W`` the class prior: the per-class mean
of ``softmax(t / prior_T)`` over the previous epoch (uniform ``1/C`` in epoch 1; accumulated from
every step's teacher logits, swapped at the epoch end, :class:`advtrain.losses.ClassPrior`), else the
per-sample ``u_i = softmax(t_i / prior_T)``. ``gkl_kd_clean`` raises ``u`` to ``gamma``. The
normaliser ``Z`` is ``B`` in ``ikl_kd`` (v1: ``loss_mse.sum() / B``) and ``sum_i (sum_j u_ij)^2``
(the total pair weight) in ``gkl_kd_clean`` (v2: ``/ p_n.sum()``). The wMSE is evaluated in O(B C)
(:func:`advtrain.losses.weighted_pair_mse`), never with the reference's (B, C, C) tensors.

Defaults are each reference's own config defaults (``mdistiller/engine/cfg.py``):

- ``ikl_kd`` (``CFG.IKL_KD``, v1 cfg.py:171-179): warmup 1 (no ramp), ce_weight 1, loss_T 1, alpha 1,
  beta 1, prior_T 100, use_prior False (per-sample ``softmax(t / 100)``, near uniform). The v1
  ImageNet configs turn the prior on (GI True, T2 1); the v1 ImageNet-LT scripts never do.
- ``gkl_kd_clean`` (``CFG.GKL_KD``, v2 cfg.py:171-181): warmup 5, ce_weight 1, loss_T 1, alpha 1,
  beta 1, gamma 1, prior_T 1, use_prior True.
- ``kl_kd`` (``CFG.KD``, cfg.py:60-65): loss_T 4, ce_weight 0.1, kd_weight 0.9 (the CIFAR setting;
  mdistiller's ImageNet yamls use T 1, 0.5/0.5; the ImageNet-LT code CE + distill_w T^2 KL).

Names: ``gkl_kd`` is already the robust GKL distillation of SPEC §12 (RSLAD's structure with an
attack), so the clean v2 loss is ``gkl_kd_clean``; ``ikl_kd`` has no robust namesake.

The objectives train without an attack: their recommended ``attack:`` section (``Options.ATTACK``)
names the training attack ``none`` (``attacks.TRAINING_ATTACKS``; ``perturb`` returns a copy of ``x``
without a forward) with a fixed 0-step budget, so the run's config says so.
The epoch for the warm-up factor is counted by the objective itself (a buffer: 1 at the start,
+1 at every :meth:`on_epoch_end`), so it resumes with the objective's state.

Example::

    obj = build_objective("ikl_kd", dataset="imagenet", num_classes=1000, teacher=teacher,
                          alpha=1.0, beta=0.5, use_prior=True, prior_T=1.0)
    loss, terms = obj.loss(model, x, obj.perturb(model, x, y), y)  # terms: ce, soft_ce, wmse, kd_factor
    obj.on_epoch_end()                                              # prior + epoch for the next epoch
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advtrain.objectives.base import NONNEG, POSITIVE, ObjectiveOptions, finish_terms, opt
from advtrain.objectives.distill import DistillObjective, teacher_kl

#: no attack: the training attack ``none`` (``x_adv = x``), a fixed 0-step budget; eps and norm only
#: name the threat model of the per-epoch PGD test (the configs switch that off: eval.test_pgd_steps 0)
NO_ATTACK = {"name": "none", "eps": 8 / 255, "norm": "Linf", "schedule": "fixed", "steps": 0,
             "step_size": 2 / 255, "ramp": False}
#: mdistiller's SOLVER defaults (v1 = v2, ``mdistiller/engine/cfg.py:39-48``): SGD lr 0.05, momentum
#: 0.9, wd 1e-4, 240 epochs, lr x0.1 once the epoch exceeds 150, 180, 210 (``adjust_learning_rate``:
#: 1-indexed epochs 151, 181, 211 run the lower lr), no nesterov, no lr warm-up
MDISTILLER_OPTIM = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "piecewise",
                    "milestones": [151, 181, 211], "lr_gamma": 0.1, "epochs": 240, "warmup_epochs": 0,
                    "nesterov": False}


@dataclass(frozen=True)
class IKLKDOptions(ObjectiveOptions):
    """``CFG.IKL_KD`` (DKLv1 ``KD-dkl/mdistiller/engine/cfg.py:171-179``)."""

    ce_weight: float = opt(1.0, **NONNEG)  # CE_WEIGHT
    alpha: float = opt(1.0, **NONNEG)  # ALPHA: soft-CE weight
    beta: float = opt(1.0, **NONNEG)  # BETA: wMSE weight
    loss_T: float = opt(1.0, **POSITIVE)  # T: soft-CE temperature (the wMSE uses raw logits)
    prior_T: float = opt(100.0, **POSITIVE)  # T2 (v1 default 100)
    use_prior: bool = False  # GI (v1 default False: per-sample softmax(t / T2))
    warmup: int = opt(1, min=1)  # WARMUP epochs of the KD ramp min(e / warmup, 1) (v1 default 1)
    ATTACK = NO_ATTACK
    OPTIM = MDISTILLER_OPTIM


@dataclass(frozen=True)
class GKLKDCleanOptions(IKLKDOptions):
    """``CFG.GKL_KD`` (DKLv2 ``KD-dkl/mdistiller/engine/cfg.py:171-181``)."""

    gamma: float = opt(1.0, **NONNEG)  # GAMMA: power of the weights
    prior_T: float = opt(1.0, **POSITIVE)  # T2
    use_prior: bool = True  # GI
    warmup: int = opt(5, min=1)  # WARMUP


@dataclass(frozen=True)
class KLKDOptions(ObjectiveOptions):
    """``CFG.KD`` (mdistiller ``engine/cfg.py:60-65``; ``distillers/KD.py``)."""

    ce_weight: float = opt(0.1, **NONNEG)  # CE_WEIGHT
    kd_weight: float = opt(0.9, **NONNEG)  # KD_WEIGHT
    loss_T: float = opt(4.0, **POSITIVE)  # TEMPERATURE (the KL is multiplied by T^2)
    ATTACK = NO_ATTACK
    OPTIM = MDISTILLER_OPTIM


def at_least_float32(logits):
    """Student logits in float32 (or float64) for the KD terms: under bf16 autocast the wMSE's pair
    weights and differences would otherwise be rounded to bf16."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


class CleanDistillObjective(DistillObjective):
    """A distillation objective of the clean regime: its recipe's training attack is ``none``
    (``perturb`` returns a copy of ``x``, no forward); another ``attack.name`` in a config is run
    as written, maximising the student's CE (the student distils on its inputs, the teacher still
    sees ``x``)."""

    def __init__(self, options, attack, **kwargs):
        super().__init__(options, attack, **kwargs)
        self.attack = self.make_attack("ce")  # none ignores its loss
        self.register_buffer("epoch", torch.ones((), dtype=torch.long))

    def kd_factor(self) -> float:
        """``min(epoch / warmup, 1)`` (the reference's KD warm-up, 1-indexed epochs)."""
        warmup = getattr(self.options, "warmup", 1)
        return min(int(self.epoch) / warmup, 1.0)

    def on_epoch_end(self, reduce=None):
        self.epoch += 1


class IKLKD(CleanDistillObjective):
    """IKL-KD (DKLv1 ``IKL_KD.py``): wMSE divided by the batch size."""

    name = "ikl_kd"
    Options = IKLKDOptions
    normalise_by_weight = False

    def __init__(self, options, attack, **kwargs):
        super().__init__(options, attack, **kwargs)
        from advtrain.losses import ClassPrior

        self.prior = ClassPrior(self.num_classes)

    def weights(self, t, y):
        """``u``: the prior rows ``W[y]`` (GI) or ``softmax(t / prior_T)``, to the power gamma."""
        o = self.options
        u = self.prior.weights(y).to(t.dtype) if o.use_prior else F.softmax(t / o.prior_T, dim=1)
        gamma = getattr(o, "gamma", 1.0)
        return u if gamma == 1 else u.pow(gamma)

    def wmse(self, s, t, y):
        from advtrain.losses import weighted_pair_mse

        with torch.no_grad():
            u = self.weights(t, y)
            z = u.sum(1).square().sum() if self.normalise_by_weight else torch.tensor(float(len(y)))
            z = z.to(s.dtype).clamp_min(torch.finfo(s.dtype).tiny)
        return 0.25 * weighted_pair_mse(s, t, u).sum() / z

    def loss(self, model, x, x_adv, y, *, update_state=True):
        from advtrain.losses import soft_cross_entropy

        o = self.options
        t = self.teacher_logits(x)
        s = at_least_float32(model(x_adv))  # attack none: x_adv equals x
        ce = self.ce(s, y)
        soft_ce = soft_cross_entropy(s, t, o.loss_T)
        wmse = self.wmse(s, t, y)
        factor = self.kd_factor()
        loss = o.ce_weight * ce + factor * (o.alpha * soft_ce + o.beta * wmse)
        if update_state:  # after this step's weights were taken: W changes only per epoch
            self.prior.update(t, y, o.prior_T)
        return loss, finish_terms(loss, s, y, ce=ce, soft_ce=soft_ce, wmse=wmse,
                                  kd_factor=torch.tensor(factor))

    def on_epoch_end(self, reduce=None):
        """The epoch's teacher probabilities per class become the next epoch's prior."""
        self.prior.end_epoch(reduce)
        super().on_epoch_end(reduce)


class GKLKDClean(IKLKD):
    """GKL-KD (DKLv2 ``GKL_KD.py``): weights to the power gamma, wMSE divided by their total."""

    name = "gkl_kd_clean"
    Options = GKLKDCleanOptions
    normalise_by_weight = True


class KLKD(CleanDistillObjective):
    """Hinton KD (mdistiller ``KD.py``): ``ce_weight CE + kd_weight T^2 KL(teacher || student)``."""

    name = "kl_kd"
    Options = KLKDOptions

    def loss(self, model, x, x_adv, y, *, update_state=True):
        o = self.options
        t = self.teacher_logits(x)
        s = at_least_float32(model(x_adv))
        ce = self.ce(s, y)
        kl = teacher_kl(s, t, o.loss_T)
        loss = o.ce_weight * ce + o.kd_weight * o.loss_T ** 2 * kl
        return loss, finish_terms(loss, s, y, ce=ce, kl=kl)
