"""PGD-AT (Madry et al., ICLR 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks").

Loss: ``L = CE(f(x'), y)`` with ``x' = argmax_{||x'-x|| <= eps} CE(f(x'), y)`` (PGD, uniform start).
The clean input gets no forward. With AWP (AT-AWP, gamma 0.01, warm-up 0) the proxy ascends the same
loss.

Example::

    obj = build_objective("pgd_at", dataset="cifar10", num_classes=10)
    x_adv = obj.perturb(model, x, y)
    loss, terms = obj.loss(model, x, x_adv, y)   # terms: ce_adv, loss, acc_adv
"""
from __future__ import annotations

from dataclasses import dataclass

from advtrain.objectives.base import DKL_ATTACK, Objective, ObjectiveOptions, finish_terms, opt

ATTACK_LOSSES = ("ce", "cw", "kl")


@dataclass(frozen=True)
class PGDATOptions(ObjectiveOptions):
    attack_loss: str = opt("ce", choices=ATTACK_LOSSES)  # Madry et al.: the training CE
    # uniform start in the ball (Madry et al.); the trainer-wide executed schedule otherwise
    ATTACK = {**DKL_ATTACK, "init": "uniform"}


class PGDAT(Objective):
    """Madry adversarial training: cross entropy on PGD examples only."""

    name = "pgd_at"
    Options = PGDATOptions

    def __init__(self, options, attack, **kwargs):
        super().__init__(options, attack, **kwargs)
        self.attack = self.make_attack(options.attack_loss)

    def loss(self, model, x, x_adv, y, *, update_state=True):
        logits_adv = model(x_adv)
        loss = self.ce(logits_adv, y)
        return loss, finish_terms(loss, logits_adv, y, ce_adv=loss)
