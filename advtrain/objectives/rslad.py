r"""RSLAD (Zi et al., ICCV 2021, "Revisiting Adversarial Robustness Distillation: Robust Soft Labels
Make Student Better"), SPEC §12.

The teacher's natural soft labels ``softmax(T(x))`` replace the hard labels in the outer loss and in
the inner maximisation (KL batch means, teacher first, temperature 1)::

    L = kl_scale * (adv_weight * KL(T(x) || S(x')) + nat_weight * KL(T(x) || S(x)))
    x' = argmax_{x' in ball} KL(T(x) || S(x'))          (PGD from x + 0.001 N(0, I), eval mode)

Defaults are the authors' code (zibojia/RSLAD ``c40e04f``: ``rslad_loss.py``,
``resnet18_rslad_cifar10.py``): weights 5/6 and 1/6, PGD-10 with step 2/255 at 8/255. The
reference averages its KL over the B*C elements (and multiplies by 10 on CIFAR-100), i.e. it trains
on ``KL / 10`` on both datasets: ``kl_scale = 0.1`` reproduces that scale (the paper configs set
it); the default 1 is the plain batch-mean KL of the paper's formula. Labels ``y`` only enter the
logged ``acc_adv``.

Example::

    obj = build_objective("rslad", dataset="cifar10", num_classes=10, teacher=teacher)
    loss, terms = obj.loss(model, x, obj.perturb(model, x, y), y)   # terms: kl_adv, kl_nat
"""
from __future__ import annotations

from dataclasses import dataclass

from advtrain.objectives.base import NONNEG, POSITIVE, ObjectiveOptions, finish_terms, opt
from advtrain.objectives.distill import KD_ATTACK, RSLAD_OPTIM, DistillObjective, teacher_kl


@dataclass(frozen=True)
class RSLADOptions(ObjectiveOptions):
    """RSLAD's options; source: zibojia/RSLAD rslad_loss.py and resnet18_rslad_cifar10.py."""

    adv_weight: float = opt(5 / 6, **NONNEG)  # rslad_loss.py: 5/6 KL(T(x) || S(x'))
    nat_weight: float = opt(1 / 6, **NONNEG)  # + 1/6 KL(T(x) || S(x))
    kl_scale: float = opt(1.0, **POSITIVE)  # 0.1 reproduces the reference's element-mean KL
    # PGD-10, step 2/255, eps 8/255 from x + 0.001 N(0, I), every epoch; SGD 0.1, 300 epochs
    ATTACK = {**KD_ATTACK, "init": "normal"}
    OPTIM = RSLAD_OPTIM


class RSLAD(DistillObjective):
    """KL from the teacher's natural soft labels to the student's adversarial and natural outputs."""

    name = "rslad"
    Options = RSLADOptions

    def __init__(self, options, attack, **kwargs):
        super().__init__(options, attack, **kwargs)
        o = options
        self.adv_weight, self.nat_weight, self.kl_scale = o.adv_weight, o.nat_weight, o.kl_scale
        self.attack = self.make_attack(self.teacher_target(lambda a, y, t: teacher_kl(a, t)))

    def loss(self, model, x, x_adv, y, *, update_state=True):
        t = self.teacher_logits(x)
        logits_adv = model(x_adv)
        logits_nat = model(x)
        kl_adv, kl_nat = teacher_kl(logits_adv, t), teacher_kl(logits_nat, t)
        loss = self.kl_scale * (self.adv_weight * kl_adv + self.nat_weight * kl_nat)
        return loss, finish_terms(loss, logits_adv, y, kl_adv=kl_adv, kl_nat=kl_nat)
