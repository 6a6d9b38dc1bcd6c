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

from advtrain.objectives.ikl_at import IKLAT


class GKLAT(IKLAT):
    """Generalised KL adversarial training: IKL-AT with weight power gamma and sum-of-weights norm."""

    name = "gkl_at"
    DEFAULTS = {**IKLAT.DEFAULTS, "gamma": 1.0}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gamma = self.options["gamma"]

    def robust(self, logits_adv, logits_nat, weights):
        """``(beta * wMSE + alpha * soft CE, {"wmse", "soft_ce"})`` with v2 normalisation."""
        from advtrain.losses import gkl_loss

        return gkl_loss(logits_adv, logits_nat, weights, alpha=self.alpha, beta=self.beta,
                        gamma=self.gamma, temperature=self.loss_T, return_terms=True)
