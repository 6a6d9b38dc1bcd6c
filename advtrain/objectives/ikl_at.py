r"""IKL-AT (Cui et al., NeurIPS 2024, "Decoupled Kullback-Leibler Divergence Loss", DKLv1), SPEC §2.

With natural logits ``n = f(x)``, adversarial logits ``a = f(x')`` (one train-mode forward each,
adversarial first) and per-sample weights ``u_i = W[y_i]`` from the class prior ``W`` (SPEC §2.1)::

    L = CE(n, y) + beta * 1/(4B) sum_i sum_{j,k} u_ij u_ik ((n_ij - n_ik) - (a_ij - a_ik))^2
                 + alpha * (-1/B) sum_i sum_j sg(softmax(n_i / T_loss))_j log softmax(a_i / T_loss)_j

(code letters: alpha = soft CE, beta = wMSE; no stop-gradient inside the wMSE). The prior accumulates
``softmax(n / prior_T)`` of the main forward's natural logits (first half only in two-view mode) and
is refreshed by ``on_epoch_end``. Two-view mode (``[basic; AutoAug]`` batch, labels duplicated):
the robust loss of each half is normalised separately and the AutoAug half is weighted by
``aug_weight``; the CE averages all 2B rows (SPEC §2.2, §10.6). The attack maximises
``attack_alpha * soft CE + attack_beta * wMSE`` (prior weights ** attack_gamma), from
``x + 0.001 N(0, I)`` (SPEC §2.3). AWP's proxy loss is ``CE + beta wMSE + alpha soft CE`` on the
whole batch with no aug weight (SPEC §2.4; see :meth:`IKLAT.awp_loss`).
``use_prior=False`` replaces ``W[y_i]`` by the per-sample ``sg(softmax(n_i))`` (temperature 1, in
training and in the attack; ``prior_T`` then has no effect).

Example::

    obj = build_objective("ikl_at", dataset="cifar100", num_classes=100, alpha=4, beta=20)
    loss, terms = obj.loss(model, x, obj.perturb(model, x, y), y)   # terms: ce_nat, wmse, soft_ce, rob
    obj.on_epoch_end()                                               # new prior for the next epoch
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advtrain.errors import InputError
from advtrain.objectives.base import NONNEG, POSITIVE, Objective, ObjectiveOptions, finish_terms, opt


@dataclass(frozen=True)
class IKLATOptions(ObjectiveOptions):
    """DKL's options (SPEC §2, §7 rows 1-5); the attack is DKL's executed schedule (the default)."""

    alpha: float = opt(4.0, **NONNEG)  # soft-CE weight
    beta: float = opt(20.0, **NONNEG)  # wMSE weight
    prior_T: float = opt(4.0, **POSITIVE)  # temperature of the class prior
    loss_T: float = opt(1.0, **POSITIVE)  # temperature of the soft CE
    use_prior: bool = True
    attack_alpha: float = opt(1.0, **NONNEG)  # SPEC §2.3: the attack's soft-CE weight
    attack_beta: float = opt(0.0, **NONNEG)  # CIFAR-10 0, CIFAR-100 1: see defaults()
    attack_gamma: float = opt(1.0, **NONNEG)
    aug_weight: float = opt(0.3, **NONNEG)  # two-view AutoAug half (SPEC §2.2)
    two_view: bool = False
    prior_momentum: float = opt(1.0, gt=0, max=1)

    @classmethod
    def defaults(cls, dataset=None):
        """CIFAR-100 attacks also weight the wMSE (attack_beta 1), CIFAR-10 ones do not (SPEC §2.3)."""
        opts = super().defaults(dataset)
        opts["attack_beta"] = 1.0 if str(dataset or "").lower().startswith("cifar100") else 0.0
        return opts


class IKLAT(Objective):
    """Improved KL adversarial training: CE + class-prior-weighted wMSE + soft CE."""

    name = "ikl_at"
    Options = IKLATOptions

    def __init__(self, options, attack, **kwargs):
        super().__init__(options, attack, **kwargs)
        from advtrain.losses import ClassPrior

        o = options
        self.alpha, self.beta = o.alpha, o.beta
        self.prior_T, self.loss_T = o.prior_T, o.loss_T
        self.use_prior, self.two_view, self.aug_weight = o.use_prior, o.two_view, o.aug_weight
        self.prior = ClassPrior(self.num_classes, momentum=o.prior_momentum)
        self.attack = self.make_attack(self._attack_loss())

    # -- pieces a subclass may change -------------------------------------------------------
    def _attack_loss(self):
        from advtrain.losses import DKLAttackLoss

        o = self.options
        weights_fn = self.prior.weights if self.use_prior else None
        return DKLAttackLoss(o.attack_alpha, o.attack_beta, o.attack_gamma, weights_fn)

    def robust(self, logits_adv, logits_nat, weights):
        """``(beta * wMSE + alpha * soft CE, {"wmse", "soft_ce"})`` of one group of rows (v1: 1/(4B))."""
        from advtrain.losses import ikl_loss, soft_cross_entropy

        if self.loss_T == 1.0:
            return ikl_loss(logits_adv, logits_nat, weights, alpha=self.alpha, beta=self.beta,
                            return_terms=True)
        wmse_part, terms = ikl_loss(logits_adv, logits_nat, weights, alpha=0.0, beta=self.beta,
                                    return_terms=True)
        soft_ce = soft_cross_entropy(logits_adv, logits_nat, self.loss_T)
        return wmse_part + self.alpha * soft_ce, {**terms, "soft_ce": soft_ce.detach()}

    # -- the contract ----------------------------------------------------------------------
    def weights(self, logits_nat, y):
        """Per-sample weight rows: the prior's ``W[y]``, or ``sg(softmax(n))``."""
        if self.use_prior:
            return self.prior.weights(y).to(logits_nat.dtype)
        return F.softmax(logits_nat.detach(), dim=1)

    def _half(self, x, y):
        """Size B of the basic view (the whole batch when not two-view); checks the layout."""
        if not self.two_view:
            return len(y)
        half = len(y) // 2
        if len(y) % 2 or not torch.equal(y[:half], y[half:]):
            raise InputError(f"objective {self.name!r} with two_view=true needs a batch [basic view; "
                             "AutoAug view] with duplicated labels; use the two-view data loader "
                             "or set two_view=false")
        return half

    def loss(self, model, x, x_adv, y, *, update_state=True):
        half = self._half(x, y)
        logits_adv = model(x_adv)
        logits_nat = model(x)
        if update_state:
            self.prior.update(logits_nat[:half].detach(), y[:half], self.prior_T)
        u = self.weights(logits_nat, y)
        ce_nat = self.ce(logits_nat, y)
        rob, terms = self.robust(logits_adv[:half], logits_nat[:half], u[:half])
        if self.two_view:
            rob_aug, terms_aug = self.robust(logits_adv[half:], logits_nat[half:], u[half:])
            rob = rob + self.aug_weight * rob_aug
            terms.update({f"{k}_aug": v for k, v in terms_aug.items()})
        loss = ce_nat + rob
        return loss, finish_terms(loss, logits_adv, y, ce_nat=ce_nat, rob=rob, **terms)

    def awp_loss(self, model, x, x_adv, y):
        """``CE(n, y) + beta wMSE + alpha soft CE`` over the whole batch (two views: no aug weight)."""
        logits_adv = model(x_adv)
        logits_nat = model(x)
        rob, _ = self.robust(logits_adv, logits_nat, self.weights(logits_nat, y))
        return self.ce(logits_nat, y) + rob

    def on_epoch_end(self, reduce=None):
        """Turn the epoch's accumulated natural probabilities into the next epoch's prior."""
        self.prior.end_epoch(reduce)
