"""SPEC expressions of the objectives' losses in plain tensor ops (not a test module).

Written from ../shared/SPEC.md (§2.2 IKL/GKL, §4.1 TRADES, §4.4 LBGAT) and the MART authors' code,
independently of ``advtrain.losses``; the objective tests compare the toolkit against them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ce(logits, y):
    return -F.log_softmax(logits, 1)[torch.arange(len(y)), y].mean()


def kl_rows(logits_p, logits_q):
    """KL(softmax p_i || softmax q_i) per row, gradients through both."""
    log_p, log_q = F.log_softmax(logits_p, 1), F.log_softmax(logits_q, 1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


def pair_sum(n, a, u):
    """sum_{j,k} u_ij u_ik ((n_ij - n_ik) - (a_ij - a_ik))^2 per row, with the full (B, C, C) tensors."""
    dn, da = n[:, :, None] - n[:, None, :], a[:, :, None] - a[:, None, :]
    return (u[:, :, None] * u[:, None, :] * (dn - da) ** 2).sum((1, 2))


def soft_ce(a, n, tau=1.0):
    """-(1/B) sum_i sum_j sg(softmax(n_i / tau))_j log softmax(a_i / tau)_j"""
    return -(torch.softmax(n / tau, 1).detach() * F.log_softmax(a / tau, 1)).sum(1).mean()


def ikl_rob(a, n, u, alpha, beta):
    """IKL-AT robust loss (v1): beta/(4B) sum_i pair_sum_i + alpha soft CE; u = prior rows W[y]."""
    return beta * pair_sum(n, a, u).sum() / (4 * len(a)) + alpha * soft_ce(a, n)


def gkl_rob(a, n, w, alpha, beta, gamma):
    """GKL-AT robust loss (v2): u = w^gamma, wMSE normalised by 4 sum_i (sum_j u_ij)^2."""
    u = w ** gamma
    return beta * pair_sum(n, a, u).sum() / (4 * (u.sum(1) ** 2).sum()) + alpha * soft_ce(a, n)


def spec_loss(name, o, a, n, y, guide=None, prior=None):
    """The SPEC expression of objective ``name`` with options ``o`` (logits a = f(x'), n = f(x))."""
    r = torch.arange(len(y))
    if name == "pgd_at":
        return ce(a, y)
    if name == "trades":  # SPEC §4.1
        return ce(n, y) + o["beta"] * kl_rows(n, a).mean()
    if name == "mart":  # YisenWang/MART mart.py, stabilisers included
        pa, pn = torch.softmax(a, 1), torch.softmax(n, 1)
        top2 = torch.argsort(pa, 1)[:, -2:]
        new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
        bce = ce(a, y) - torch.log(1.0001 - pa[r, new_y] + 1e-12).mean()
        kl = (torch.xlogy(pn, pn) - pn * torch.log(pa + 1e-12)).sum(1)  # nn.KLDivLoss: 0 log 0 = 0
        return bce + o["beta"] * (kl * (1.0000001 - pn[r, y])).mean()
    if name in ("lbgat", "lbgat0"):  # SPEC §4.4: MSE over B*C elements + CE(f_n) + beta KL
        return ((a - guide) ** 2).mean() + ce(guide, y) + o["beta"] * kl_rows(n, a).mean()
    if name == "ikl_at":  # SPEC §2.2 v1
        return ce(n, y) + ikl_rob(a, n, prior.to(a.dtype)[y], o["alpha"], o["beta"])
    if name == "gkl_at":  # SPEC §2.2 v2
        return ce(n, y) + gkl_rob(a, n, prior.to(a.dtype)[y], o["alpha"], o["beta"], o["gamma"])
    raise AssertionError(name)
