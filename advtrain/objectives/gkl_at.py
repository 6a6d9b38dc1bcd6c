r"""GKL-AT (Cui et al., TPAMI 2026, "Generalized Kullback-Leibler Divergence Loss", DKLv2), SPEC §2.

Same as IKL-AT (:mod:`advtrain.objectives.ikl_at`: prior, two views, attack, AWP) except the wMSE
weights are raised to the power ``gamma`` and normalised by the total pair weight::

    u_i = W[y_i] ** gamma
    wMSE = sum_i sum_{j,k} u_ij u_ik ((n_ij - n_ik) - (a_ij - a_ik))^2 / (4 sum_i (sum_j u_ij)^2)

For ``gamma = 1`` the rows of ``W`` sum to 1, the denominator is 4B and GKL-AT equals IKL-AT.
The soft CE uses temperature ``loss_T`` (1 in the reference).

Example::

    obj = build_objective("gkl_at", dataset="cifar100", num_classes=100, alpha=4, beta=20, gamma=0.4)
"""
from __future__ import annotations

from dataclasses import dataclass

from advtrain.objectives.base import NONNEG, opt
from advtrain.objectives.ikl_at import IKLAT, IKLATOptions


@dataclass(frozen=True)
class GKLATOptions(IKLATOptions):
    """IKL-AT's options (and DKL's executed attack schedule) plus the weight power."""

    gamma: float = opt(1.0, **NONNEG)  # DKLv2 (SPEC §2.2): u = W[y] ** gamma


class GKLAT(IKLAT):
    """Generalised KL adversarial training: IKL-AT with weight power gamma and sum-of-weights norm."""

    name = "gkl_at"
    Options = GKLATOptions

    def __init__(self, options, attack, **kwargs):
        super().__init__(options, attack, **kwargs)
        self.gamma = options.gamma

    def robust(self, logits_adv, logits_nat, weights):
        """``(beta * wMSE + alpha * soft CE, {"wmse", "soft_ce"})`` with v2 normalisation."""
        from advtrain.losses import gkl_loss

        return gkl_loss(logits_adv, logits_nat, weights, alpha=self.alpha, beta=self.beta,
                        gamma=self.gamma, temperature=self.loss_T, return_terms=True)
