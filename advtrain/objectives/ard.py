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

from advtrain.errors import InputError
from advtrain.objectives.base import finish_terms
from advtrain.objectives.distill import DistillObjective, teacher_kl


class ARD(DistillObjective):
    """Student's adversarial logits distilled towards the teacher's natural logits at temperature tau."""

    name = "ard"
    DEFAULTS = {"alpha": 1.0, "loss_T": 30.0, "kl_scale": 1.0, "attack_init": "uniform"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        o = self.options
        self.alpha, self.tau, self.kl_scale = o["alpha"], o["loss_T"], o["kl_scale"]
        if self.alpha > 1:
            raise InputError(f"objective option alpha={self.alpha} of 'ard' must be in [0, 1] "
                             "(weights 1 - alpha on CE and alpha on the distillation term)")
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
