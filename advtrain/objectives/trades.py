"""TRADES (Zhang et al., ICML 2019, "Theoretically Principled Trade-off between Robustness and Accuracy").

Loss: ``L = CE(f(x), y) + beta * (1/B) sum_i KL(softmax f(x_i) || softmax f(x'_i))``, gradient through
both arguments of the KL; the attack maximises the same KL from ``x + 0.001 N(0, I)`` (SPEC §4.1).
The DM synthetic-data variant (SPEC §6) is this class with ``bn_mode="train_frozen"``,
``attack_init="uniform"`` and ``label_smoothing=0.1``.

Example::

    obj = build_objective("trades", dataset="cifar10", num_classes=10, beta=6.0)
    loss, terms = obj.loss(model, x, obj.perturb(model, x, y), y)   # terms: ce_nat, kl, rob, ...
"""
from __future__ import annotations

from dataclasses import dataclass

from advtrain.objectives.base import NONNEG, Objective, ObjectiveOptions, finish_terms, opt
from advtrain.objectives.pgd_at import ATTACK_LOSSES


@dataclass(frozen=True)
class TRADESOptions(ObjectiveOptions):
    beta: float = opt(6.0, **NONNEG)  # TRADES' beta (README: useful range 1-10)
    attack_loss: str = opt("kl", choices=ATTACK_LOSSES)  # the attack maximises the same KL
    # attack: the trainer-wide DKL executed schedule (the DKL repo's TRADES baseline, SPEC §4.3)


class TRADES(Objective):
    """CE on clean inputs plus beta times the batch-mean KL(clean || adversarial)."""

    name = "trades"
    Options = TRADESOptions

    def __init__(self, options, attack, **kwargs):
        super().__init__(options, attack, **kwargs)
        self.beta = options.beta
        self.attack = self.make_attack(options.attack_loss)

    def loss(self, model, x, x_adv, y, *, update_state=True):
        from advtrain.losses import trades_kl

        logits_adv = model(x_adv)
        logits_nat = model(x)
        ce_nat = self.ce(logits_nat, y)
        kl = trades_kl(logits_adv, logits_nat)
        loss = ce_nat + self.beta * kl
        return loss, finish_terms(loss, logits_adv, y, ce_nat=ce_nat, kl=kl, rob=self.beta * kl)
