"""GradAlign (SPEC §13.3) against float64 formulas written here: its value on a linear model, whose input
gradient is W^T(p − e_y), and its gradient w.r.t. the weights (double backprop) against central finite
differences of that formula; the ``ce`` objective's total loss with ``grad_align: λ``."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advtrain.config import build_objective
from advtrain.losses import grad_align_cosine, input_grad

B, D, K = 5, 12, 3
EPS = 8 / 255


def linear(seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(D, K).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(K, D, generator=g, dtype=torch.float64))
        lin.bias.copy_(torch.randn(K, generator=g, dtype=torch.float64))
    return lin


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, D, generator=g, dtype=torch.float64)
    eta = (2 * torch.rand(B, D, generator=g, dtype=torch.float64) - 1) * EPS
    return x, torch.tensor([0, 1, 2, 0, 1]), eta


def ce_input_grad(W, b, v, y):
    """∂/∂v of the batch-mean CE of f(v) = W v + b: (p − e_y) W / B, per example."""
    p = torch.softmax(v @ W.T + b, dim=1)
    return (p - torch.nn.functional.one_hot(y, K).double()) @ W / len(y)


def misalignment(W, b, x, y, eta, g1):
    """1 − mean_i cos(g1_i, g2_i), g2 at x + eta (float64, by hand)."""
    g2 = ce_input_grad(W, b, x + eta, y)
    cos = (g1 * g2).sum(1) / (g1.norm(dim=1) * g2.norm(dim=1))
    return 1 - cos.mean()


def test_grad_align_value_and_weight_gradient_match_float64_formula():
    model = linear()
    x, y, eta = data()
    W0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    g1_ref = ce_input_grad(W0, b0, x, y)
    expected = misalignment(W0, b0, x, y, eta, g1_ref)

    g1 = input_grad(model, x, y)
    assert torch.allclose(g1, g1_ref, atol=1e-12)
    g2 = input_grad(model, x + eta, y, create_graph=True)
    reg = grad_align_cosine(g1, g2)
    assert reg.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    assert expected.item() > 1e-4  # the gradients are not aligned already (the test can fail)

    model.zero_grad()
    reg.backward()  # double backprop through g2 only; g1 is held fixed (detached in the reference)
    h = 1e-6
    fd_W = torch.zeros_like(W0)
    for i in range(K):
        for j in range(D):
            Wp, Wm = W0.clone(), W0.clone()
            Wp[i, j] += h
            Wm[i, j] -= h
            fd_W[i, j] = (misalignment(Wp, b0, x, y, eta, g1_ref)
                          - misalignment(Wm, b0, x, y, eta, g1_ref)) / (2 * h)
    fd_b = torch.zeros_like(b0)
    for i in range(K):
        bp, bm = b0.clone(), b0.clone()
        bp[i] += h
        bm[i] -= h
        fd_b[i] = (misalignment(W0, bp, x, y, eta, g1_ref) - misalignment(W0, bm, x, y, eta, g1_ref)) / (2 * h)
    assert fd_W.abs().max() > 1e-3
    assert torch.allclose(model.weight.grad, fd_W, atol=1e-7, rtol=1e-5)
    assert torch.allclose(model.bias.grad, fd_b, atol=1e-7, rtol=1e-5)


def test_zero_gradient_examples_are_left_out_of_the_mean():
    g = torch.Generator().manual_seed(2)
    g1 = torch.randn(4, 6, generator=g, dtype=torch.float64)
    g2 = torch.randn(4, 6, generator=g, dtype=torch.float64)
    g1[1] = 0.0
    g2[3] = 0.0
    cos = [float((g1[i] @ g2[i]) / (g1[i].norm() * g2[i].norm())) for i in (0, 2)]
    assert grad_align_cosine(g1, g2).item() == pytest.approx(1 - sum(cos) / 2, rel=1e-12)
    assert grad_align_cosine(torch.zeros(2, 3), torch.ones(2, 3)).item() == 0.0


def test_ce_objective_adds_lambda_times_misalignment():
    model = linear(3)
    x, y, _ = data(4)
    lam = 0.2
    obj = build_objective("ce", dataset="cifar10", num_classes=K, grad_align=lam)
    obj.set_attack_budget(EPS, EPS, 1)
    x_adv = (x + EPS).clamp(0, 1)
    torch.manual_seed(7)
    loss, terms = obj.loss(model, x, x_adv, y)
    torch.manual_seed(7)
    eta = torch.empty_like(x).uniform_(-EPS, EPS)  # the objective's only draw
    W, b = model.weight.detach(), model.bias.detach()
    logp = torch.log_softmax(x_adv @ W.T + b, 1)
    ce = -logp.gather(1, y.view(-1, 1)).mean()
    align = misalignment(W, b, x, y, eta, ce_input_grad(W, b, x, y))
    assert loss.item() == pytest.approx((ce + lam * align).item(), rel=1e-9)
    assert terms["grad_align"].item() == pytest.approx(align.item(), rel=1e-9)
    assert terms["ce_adv"].item() == pytest.approx(ce.item(), rel=1e-9)
    plain = build_objective("ce", dataset="cifar10", num_classes=K)
    loss0, terms0 = plain.loss(model, x, x_adv, y)
    assert loss0.item() == pytest.approx(ce.item(), rel=1e-9) and "grad_align" not in terms0


def test_ce_objective_label_smoothing_matches_formula():
    """CE with label smoothing s (float64, by hand): (1 - s)·(−log p_y) + s·mean_k(−log p_k)."""
    model = linear(5)
    x, y, _ = data(6)
    s = 0.1
    obj = build_objective("ce", dataset="cifar10", num_classes=K, label_smoothing=s)
    loss, _ = obj.loss(model, x, x, y)
    logp = torch.log_softmax(x @ model.weight.detach().T + model.bias.detach(), 1)
    want = ((1 - s) * -logp.gather(1, y.view(-1, 1)).squeeze(1) + s * -logp.mean(1)).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)


def test_ce_objective_takes_mixup_soft_targets():
    """B×K soft targets (mixup/cutmix): CE = mean_i −Σ_k t_ik log p_ik, GradAlign's gradients of
    the same soft CE (float64, by hand); the config check lets ``ce`` train with mixup."""
    from advtrain.config import from_dict
    from advtrain.config.check import SOFT_TARGETS

    model = linear(8)
    x, y, _ = data(9)
    lam = 0.2
    t = 0.7 * torch.nn.functional.one_hot(y, K).double() + 0.3 * torch.nn.functional.one_hot(
        y.roll(1), K).double()  # what mixup with lambda 0.7 gives
    obj = build_objective("ce", dataset="cifar10", num_classes=K, grad_align=lam)
    obj.set_attack_budget(EPS, EPS, 1)
    torch.manual_seed(3)
    loss, _ = obj.loss(model, x, x, t)
    torch.manual_seed(3)
    eta = torch.empty_like(x).uniform_(-EPS, EPS)
    W, b = model.weight.detach(), model.bias.detach()

    def soft_grad(v):
        return (torch.softmax(v @ W.T + b, 1) - t) @ W / len(t)

    g1, g2 = soft_grad(x), soft_grad(x + eta)
    align = 1 - ((g1 * g2).sum(1) / (g1.norm(dim=1) * g2.norm(dim=1))).mean()
    ce = -(t * torch.log_softmax(x @ W.T + b, 1)).sum(1).mean()
    assert loss.item() == pytest.approx((ce + lam * align).item(), rel=1e-9)
    assert "ce" in SOFT_TARGETS
    cfg = from_dict({"objective": {"name": "ce"}, "attack": {"name": "none"},
                     "data": {"dataset": "imagefolder", "root": "r", "num_classes": 10, "mixup": 0.8,
                              "augment": "basic", "train_npz": None, "test_npz": None}})
    assert cfg.data.mixup == 0.8


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, K)).double()


@pytest.mark.parametrize("bn_mode, reused", [("train", True), ("eval", False)])
def test_g1_is_the_fgsm_gradient_at_x_when_the_reference_would_reuse_it(bn_mode, reused):
    """With FGSM from x on CE in train mode (configs/grad_align_cifar10.yaml) g1 is the attack's own
    gradient: 3 forwards per step (attack, x', x + eta) as in the reference instead of 4, and the
    same loss, weight gradients and BatchNorm statistics as a separate g1 pass (float64). With the
    attack in eval mode its gradient is not the train-mode g1, so g1 is taken separately."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(6, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    runs = {}
    for reuse in (True, False):
        net = _bn_net()
        obj = build_objective("ce", dataset="cifar10", num_classes=K, grad_align=0.5,
                              attack_name="fgsm", eps=EPS, bn_mode=bn_mode)
        assert obj.reuses_attack_grad is reused
        obj.reuses_attack_grad = obj.reuses_attack_grad and reuse
        calls = []
        net.register_forward_hook(lambda *_: calls.append(1))
        x_adv = obj.perturb(net, x, y)
        torch.manual_seed(7)  # eta
        loss, _ = obj.loss(net, x, x_adv, y)
        loss.backward()
        runs[reuse] = (len(calls), loss.detach(), [p.grad.clone() for p in net.parameters()],
                       net[1].running_mean.clone(), net[1].running_var.clone())
        if reuse and reused:  # the kept gradient belongs to the attacked batch only
            other = x.flip(0)
            calls.clear()
            obj.perturb(net, x, y)
            obj.loss(net, other, obj.perturb(net, other, y), y)  # the attack on `other` replaced it
            assert len(calls) == 1 + 3
            calls.clear()
            obj.perturb(net, x, y)
            obj.loss(net, other, other, y)  # x's gradient is not `other`'s g1: taken separately
            assert len(calls) == 1 + 3
    (n_reuse, *a), (n_sep, *b) = runs[True], runs[False]
    assert (n_reuse, n_sep) == ((3, 4) if reused else (4, 4))
    for u, v in zip(a[:1] + a[1] + a[2:], b[:1] + b[1] + b[2:]):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-13)
