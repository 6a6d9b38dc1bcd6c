"""Tests of advtrain.losses against explicit pairwise (B×C×C) float64 references written here."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advtrain.errors import InputError
from advtrain.losses import (ClassPrior, dkl_loss, gkl_loss, ikl_loss, trades_kl,
                             weighted_pair_mse)

CLASSES = [2, 3, 10, 100]


# ----------------------------------------------------------------------------- references
def pair_sum_ref(s, t, u):
    """Σ_{j,k} u_j u_k ((t_j - t_k) - (s_j - s_k))², built with the full (B, C, C) tensors."""
    dt = t[:, :, None] - t[:, None, :]
    ds = s[:, :, None] - s[:, None, :]
    pairs = u[:, :, None] * u[:, None, :]
    return (pairs * (dt - ds) ** 2).sum(dim=(1, 2))


def soft_ce_ref(s, t, tau=1.0):
    return -(F.softmax(t.detach() / tau, 1) * F.log_softmax(s / tau, 1)).sum(1).mean()


def kl_ref(s, t, tau=1.0):
    """mean_i KL(softmax(t/τ) ‖ softmax(s/τ)), gradients through both."""
    log_p, log_q = F.log_softmax(t / tau, 1), F.log_softmax(s / tau, 1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


def logits(b, c, scale=3.0, dtype=torch.float64):
    return (scale * torch.randn(b, c, dtype=dtype)).requires_grad_()


def rows(b, c, dtype=torch.float64):
    """Random probability rows (B, C)."""
    return F.softmax(2 * torch.randn(b, c, dtype=dtype), 1)


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


def assert_close_all(xs, ys, **tol):
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x, y, **tol)


# ----------------------------------------------------------------------------- wMSE
@pytest.mark.parametrize("c", CLASSES)
def test_weighted_pair_mse_matches_pairwise_values_and_grads(c):
    s, t, u = logits(6, c), logits(6, c), rows(6, c) * 3  # rows need not sum to 1
    g = torch.randn(6, dtype=torch.float64)
    ours = weighted_pair_mse(s, t, u)
    ref = pair_sum_ref(s, t, u)
    assert ours.shape == (6,)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    assert_close_all(grads((ours * g).sum(), s, t), grads((ref * g).sum(), s, t),
                     rtol=1e-9, atol=1e-10)


def test_weighted_pair_mse_treats_weights_as_constants():
    s, t = logits(4, 5), logits(4, 5)
    u = rows(4, 5).requires_grad_()
    weighted_pair_mse(s, t, u).sum().backward()
    assert u.grad is None
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


def test_weighted_pair_mse_zero_weight_row_is_zero_not_nan():
    s, t, u = logits(3, 4), logits(3, 4), rows(3, 4)
    u[1] = 0
    out = weighted_pair_mse(s, t, u)
    assert torch.isfinite(out).all() and out[1] == 0 and out[0] > 0


# ----------------------------------------------------------------------------- DKL / Theorem 1
@pytest.mark.parametrize("c", [3, 10, 100])
@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_dkl_gradients_equal_kl_gradients(c, tau):
    s, t = logits(8, c), logits(8, c)
    ours = grads(dkl_loss(s, t, temperature=tau), s, t)
    ref = grads(kl_ref(s, t, tau), s, t)
    assert_close_all(ours, ref, rtol=0, atol=1e-6)
    assert ref[1].abs().max() > 1e-3  # the teacher gradient is not trivially zero


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_dkl_value_matches_pairwise_formula(tau):
    s, t = logits(5, 7), logits(5, 7)
    alpha, beta = 3.0, 20.0
    p = F.softmax(t / tau, 1)
    wmse = 0.25 * pair_sum_ref(s / tau, t / tau, p).mean()
    ce = soft_ce_ref(s, t, tau)
    loss, terms = dkl_loss(s, t, alpha=alpha, beta=beta, temperature=tau, return_terms=True)
    torch.testing.assert_close(loss, beta * wmse + alpha * ce)
    torch.testing.assert_close(terms["wmse"], wmse.detach())
    torch.testing.assert_close(terms["soft_ce"], ce.detach())
    # values differ from KL (only gradients coincide): CE contains +H(p)
    assert not torch.allclose(dkl_loss(s, t), kl_ref(s, t))


def test_dkl_reproduces_trades_parameter_gradients():
    """SPEC §1 consequence 1 / §11(a): DKL(α=β=β_T) has the parameter gradients of β_T·KL."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    x = torch.rand(8, 3, 2, 2, dtype=torch.float64)
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    beta_t = 6.0

    def param_grads(loss_fn):
        net.zero_grad()
        loss_fn(net(x_adv), net(x)).backward()
        return [p.grad.clone() for p in net.parameters()]

    ours = param_grads(lambda a, n: dkl_loss(a, n, alpha=beta_t, beta=beta_t))
    ref = param_grads(lambda a, n: beta_t * trades_kl(a, n))
    assert_close_all(ours, ref, rtol=0, atol=1e-6)
    assert max(g.abs().max() for g in ref) > 1e-3


# ----------------------------------------------------------------------------- IKL / GKL
@pytest.mark.parametrize("c", [3, 10, 100])
def test_ikl_matches_pairwise_reference(c):
    a, n, u = logits(6, c), logits(6, c), rows(6, c)
    alpha, beta = 4.0, 20.0
    ref = beta * pair_sum_ref(a, n, u).sum() / (4 * 6) + alpha * soft_ce_ref(a, n)
    ours = ikl_loss(a, n, u, alpha=alpha, beta=beta)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    # no stop-gradient inside the wMSE: both logit sets get the full pairwise gradient
    assert_close_all(grads(ours, a, n), grads(ref, a, n), rtol=1e-9, atol=1e-10)


def test_gkl_gamma_one_equals_ikl():
    a, n, u = logits(8, 10), logits(8, 10), rows(8, 10)
    g_loss, g_terms = gkl_loss(a, n, u, alpha=4, beta=20, gamma=1.0, return_terms=True)
    i_loss, i_terms = ikl_loss(a, n, u, alpha=4, beta=20, return_terms=True)
    torch.testing.assert_close(g_loss, i_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_terms["wmse"], i_terms["wmse"], rtol=1e-12, atol=1e-12)
    assert_close_all(grads(g_loss, a, n), grads(i_loss, a, n), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.4, 2.0])
def test_gkl_gamma_matches_pairwise_with_pair_mass_normalisation(gamma):
    a, n, u = logits(6, 12), logits(6, 12), rows(6, 12)
    w = u ** gamma
    pair_mass = (w[:, :, None] * w[:, None, :]).sum()
    ref = 20 * 0.25 * pair_sum_ref(a, n, w).sum() / pair_mass + 4 * soft_ce_ref(a, n)
    ours = gkl_loss(a, n, u, alpha=4, beta=20, gamma=gamma)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    assert_close_all(grads(ours, a, n), grads(ref, a, n), rtol=1e-9, atol=1e-10)
    assert not torch.allclose(ours, ikl_loss(a, n, u, alpha=4, beta=20))


def test_gkl_temperature_scales_only_the_soft_ce():
    a, n, u = logits(5, 10), logits(5, 10), rows(5, 10)
    loss, terms = gkl_loss(a, n, u, temperature=4.0, return_terms=True)
    _, terms1 = gkl_loss(a, n, u, temperature=1.0, return_terms=True)
    torch.testing.assert_close(terms["wmse"], terms1["wmse"])  # wMSE on raw logits
    torch.testing.assert_close(terms["soft_ce"], soft_ce_ref(a, n, 4.0).detach())
    assert not torch.allclose(terms["soft_ce"], terms1["soft_ce"])


def test_gkl_without_class_weights_uses_detached_teacher_softmax():
    a, n = logits(5, 10), logits(5, 10)
    ours = gkl_loss(a, n, gamma=0.5)
    ref = gkl_loss(a, n, F.softmax(n, 1).detach(), gamma=0.5)
    torch.testing.assert_close(ours, ref)
    assert_close_all(grads(ours, a, n), grads(ref, a, n))


# ----------------------------------------------------------------------------- TRADES KL
def test_trades_kl_equals_kl_div_batchmean_with_grads_to_both():
    a, n = logits(7, 10), logits(7, 10)
    ours = trades_kl(a, n)
    ref = F.kl_div(F.log_softmax(a, 1), F.softmax(n, 1), reduction="batchmean")
    torch.testing.assert_close(ours, ref)
    g_ours, g_ref = grads(ours, a, n), grads(ref, a, n)
    assert_close_all(g_ours, g_ref)
    assert g_ours[1].abs().max() > 1e-4  # the natural logits receive gradient


# ----------------------------------------------------------------------------- float32
@pytest.mark.parametrize("c", [10, 100])
def test_float32_large_logit_offsets_match_float64_reference(c):
    base_t, base_s = 3 * torch.randn(16, c), 3 * torch.randn(16, c)
    t32 = base_t + 1e3 * torch.randn(16, 1)  # per-sample offsets ~1e3, different for t and s
    s32 = base_s - 1e3 * torch.randn(16, 1)
    u32 = rows(16, c, torch.float32)
    ref = pair_sum_ref(s32.double(), t32.double(), u32.double())
    ours = weighted_pair_mse(s32, t32, u32)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=2e-6, atol=1e-6)
    loss = gkl_loss(s32, t32, u32, alpha=4, beta=20, gamma=0.5)
    w = u32.double() ** 0.5
    ref_loss = (20 * 0.25 * pair_sum_ref(s32.double(), t32.double(), w).sum()
                / w.sum(1).square().sum() + 4 * soft_ce_ref(s32.double(), t32.double()))
    torch.testing.assert_close(loss.double(), ref_loss, rtol=2e-6, atol=1e-6)


# ----------------------------------------------------------------------------- ClassPrior
def _feed(prior, batches, tau):
    for n, y in batches:
        prior.update(n, y, temperature=tau)


def test_class_prior_uniform_then_class_mean_of_softmax():
    c, tau = 5, 4.0
    prior = ClassPrior(c)
    y0 = torch.tensor([0, 3, 3, 1])
    torch.testing.assert_close(prior.weights(y0), torch.full((4, c), 1 / c))
    batches = [(3 * torch.randn(6, c), torch.randint(0, c, (6,))) for _ in range(4)]
    batches.append((torch.randn(c, c), torch.arange(c)))  # every class present
    _feed(prior, batches, tau)
    torch.testing.assert_close(prior.weights(y0), torch.full((4, c), 1 / c))  # unchanged in-epoch
    prior.end_epoch()
    n_all = torch.cat([n for n, _ in batches])
    y_all = torch.cat([y for _, y in batches])
    probs = F.softmax(n_all / tau, 1)
    expected = torch.stack([probs[y_all == k].mean(0) for k in range(c)])
    torch.testing.assert_close(prior.weight, expected)
    torch.testing.assert_close(prior.weights(y0), expected[y0])
    assert prior.accum.abs().sum() == 0 and prior.counts.sum() == 0


def test_class_prior_absent_class_keeps_previous_row_and_momentum():
    c = 4
    prior = ClassPrior(c, momentum=0.5)
    _feed(prior, [(torch.randn(8, c), torch.arange(8) % c)], 1.0)
    prior.end_epoch()
    first = prior.weight.clone()
    n, y = torch.randn(6, c), torch.tensor([0, 1, 3, 0, 1, 3])  # class 2 absent
    prior.update(n, y)
    prior.end_epoch()
    torch.testing.assert_close(prior.weight[2], first[2])
    fresh0 = F.softmax(n[y == 0], 1).mean(0)
    torch.testing.assert_close(prior.weight[0], 0.5 * fresh0 + 0.5 * first[0])
    assert torch.isfinite(prior.weight).all()


def test_class_prior_reduce_hook_and_state_dict_round_trip():
    c = 3
    prior = ClassPrior(c)
    prior.update(torch.randn(5, c), torch.tensor([0, 1, 2, 2, 0]))
    seen = []
    prior.end_epoch(reduce=lambda t: (seen.append(t.shape), t.mul_(2)))
    assert seen == [(c, c), (c,)]
    prior.update(torch.randn(4, c), torch.tensor([1, 1, 0, 2]))  # mid-epoch state too
    buf = io.BytesIO()
    torch.save(prior.state_dict(), buf)
    buf.seek(0)
    clone = ClassPrior(c)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    for name in ("weight", "accum", "counts"):
        torch.testing.assert_close(getattr(clone, name), getattr(prior, name))
    assert not torch.allclose(clone.weight, torch.full((c, c), 1 / c))


# ----------------------------------------------------------------------------- bad input
BAD_CALLS = [
    ("logits_teacher", lambda: dkl_loss(torch.randn(4, 10), torch.randn(4, 9))),
    ("logits_student", lambda: ikl_loss(torch.randn(4, 10, 1), torch.randn(4, 10),
                                        torch.rand(4, 10))),
    ("class_weights", lambda: ikl_loss(torch.randn(4, 10), torch.randn(4, 10),
                                       torch.rand(4, 9))),
    ("class_weights", lambda: gkl_loss(torch.randn(4, 10), torch.randn(4, 10),
                                       torch.rand(3, 10))),
    ("gamma", lambda: gkl_loss(torch.randn(4, 10), torch.randn(4, 10), gamma=-0.5)),
    ("temperature", lambda: gkl_loss(torch.randn(4, 10), torch.randn(4, 10), temperature=0)),
    ("temperature", lambda: dkl_loss(torch.randn(4, 10), torch.randn(4, 10), temperature=-1)),
    ("logits_nat", lambda: trades_kl(torch.randn(4, 10), torch.randn(10))),
    ("weights", lambda: weighted_pair_mse(torch.randn(4, 10), torch.randn(4, 10),
                                          torch.rand(10))),
    ("logits_nat", lambda: ClassPrior(10).update(torch.randn(4, 9), torch.zeros(4).long())),
    ("y", lambda: ClassPrior(10).update(torch.randn(4, 10), torch.zeros(3).long())),
    ("y", lambda: ClassPrior(10).weights(torch.zeros(4))),
    ("num_classes", lambda: ClassPrior(0)),
    ("momentum", lambda: ClassPrior(10, momentum=0)),
]


@pytest.mark.parametrize("name,call", BAD_CALLS, ids=[f"{i}-{n}" for i, (n, _) in
                                                       enumerate(BAD_CALLS)])
def test_bad_input_raises_input_error_naming_the_argument(name, call):
    with pytest.raises(InputError, match=name) as info:
        call()
    assert "\n" not in str(info.value)
