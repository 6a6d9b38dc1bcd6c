r"""ARD (Goldblum et al., AAAI 2020, "Adversarially Robust Distillation"), SPEC §12.

With a frozen teacher ``T``, the student ``S``, natural ``x`` and adversarial ``x'``::

    L = (1 - alpha) * CE(S(x), y)
        + alpha * tau^2 * kl_scale * (1/B) sum_i KL(softmax(T(x_i)/tau) || softmax(S(x'_i)/tau))

The attack maximises the student's own ``CE(S(x'), y)`` from a uniform start in the ball (as the
reference's ``AttackPGD``). Defaults are the authors' code (goldblum/AdversariallyRobustDistillation
``779ade3``, ``main.py``): ``alpha = 1`` (so the CE term and its forward of ``S(x)`` are skipped),
``tau = loss_T = 30``, PGD-10 with step 2/255 at 8/255. Differences from that code, on purpose:
the KL is a batch mean (the reference's ``nn.KLDivLoss()`` averages over the B*C elements, i.e.
divides by C as well: ``kl_scale = 1/C`` reproduces it), and the attack runs the student in eval
mode (the reference attacks in train mode, so its BN statistics also move during the attack;
``attack.bn_mode: train`` reproduces that).

Example::

    obj = build_objective("ard", dataset="cifar10", num_classes=10, teacher=teacher)
    loss, terms = obj.loss(model, x, obj.perturb(model, x, y), y)   # terms: kl, distill (, ce_nat)
"""
from __future__ import annotations

from dataclasses import dataclass

from advtrain.objectives.base import POSITIVE, ObjectiveOptions, finish_terms, opt
from advtrain.objectives.distill import KD_ATTACK, DistillObjective, teacher_kl


@dataclass(frozen=True)
class ARDOptions(ObjectiveOptions):
    """ARD's options; source: goldblum/AdversariallyRobustDistillation main.py (its argparse
    defaults, the ``config`` of its ``AttackPGD`` and its ``optim.SGD`` call)."""

    alpha: float = opt(1.0, min=0, max=1)  # --alpha: weight of the distillation term
    loss_T: float = opt(30.0, **POSITIVE)  # --temp
    kl_scale: float = opt(1.0, **POSITIVE)  # 1/C reproduces nn.KLDivLoss()'s element mean
    # AttackPGD: uniform start in the ball, PGD-10, step 2/255, eps 8/255, every epoch
    ATTACK = {**KD_ATTACK, "init": "uniform"}
    # optim.SGD(lr=0.1, momentum=0.9, weight_decay=2e-4), 200 epochs, batch 128 (CIFAR-10);
    # adjust_learning_rate multiplies the *initial* lr by 0.1 at 0-indexed epochs 100 and 150, so the
    # executed lr is 0.1 for epochs 1-100 and 0.01 from epoch 101 on (the second drop repeats 0.01)
    OPTIM = {"lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "schedule": "piecewise",
             "milestones": [101], "lr_gamma": 0.1, "epochs": 200}


class ARD(DistillObjective):
    """Student's adversarial logits distilled towards the teacher's natural logits at temperature tau."""

    name = "ard"
    Options = ARDOptions

    def __init__(self, options, attack, **kwargs):
        super().__init__(options, attack, **kwargs)
        self.alpha, self.tau, self.kl_scale = options.alpha, options.loss_T, options.kl_scale
        self.attack = self.make_attack("ce")

    def loss(self, model, x, x_adv, y, *, update_state=True):
        t = self.teacher_logits(x)
        logits_adv = model(x_adv)
        kl = teacher_kl(logits_adv, t, self.tau)
        distill = (self.alpha * self.tau ** 2 * self.kl_scale) * kl
        loss, terms = distill, {"kl": kl, "distill": distill}
        if self.alpha < 1:
            ce_nat = self.ce(model(x), y)
            loss = loss + (1 - self.alpha) * ce_nat
            terms["ce_nat"] = ce_nat
        return loss, finish_terms(loss, logits_adv, y, **terms)
