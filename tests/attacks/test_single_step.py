"""FGSM-RS, N-FGSM and APGD-CE training attacks against float64 formulas written here from the papers'
reference code (SPEC §13.1, §13.2, §13.4), on tiny linear models whose input gradient is known."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from attacks import FGSMRS, NFGSM, APGDTrain, AttackError

E8 = 8 / 255


def binary_linear(d: int, seed: int = 0) -> nn.Module:
    """f(x) = W x + b with 2 classes and |w1 − w0| >= 0.5 in every coordinate, so that
    sign(∇_x CE) = sign(w1 − w0) for y = 0 and −sign(w1 − w0) for y = 1, wherever x is."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        diff = (0.5 + torch.rand(d, generator=g)) * torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0)
        lin.weight.copy_(torch.stack([torch.zeros(d), diff]))
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin)


def grad_sign(model: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """sign(∂CE/∂x) of the binary linear model, in float64: (p1 − [y=1])·(w1 − w0), p1 ∈ (0, 1)."""
    w = model[1].weight.detach().double()
    diff = torch.sign(w[1] - w[0])
    return torch.where(y.view(-1, 1) == 0, 1.0, -1.0).double() * diff.view(1, -1)


def images(n=6, shape=(3, 4, 4), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g)
    x[0] = 0.0  # box corners: the image clamps must bite
    x[1] = 1.0
    x[2, 0] = 0.01  # inside the ball of the lower corner
    return x, torch.tensor([0, 1, 0, 1, 0, 1])


def start_draw(seed, shape, low, high):
    """The uniform start the attack draws first from the global generator (float32, as it does)."""
    torch.manual_seed(seed)
    return torch.empty(shape).uniform_(low, high).double()


def test_fgsm_rs_one_step_matches_the_reference_formula():
    x, y = images()
    model = binary_linear(x[0].numel())
    eps, alpha = E8, 1.25 * E8
    torch.manual_seed(3)
    x_adv = FGSMRS(eps=eps)(model, x, y)
    # train_fgsm.py:106-118 in pixel space, float64
    xd = x.double()
    delta = start_draw(3, x.shape, -eps, eps)
    delta = torch.minimum(torch.maximum(delta, -xd), 1 - xd)
    s = grad_sign(model, y).view_as(xd)
    delta = (delta + alpha * s).clamp(-eps, eps)
    delta = torch.minimum(torch.maximum(delta, -xd), 1 - xd)
    expected = xd + delta
    assert torch.allclose(x_adv.double(), expected, atol=1e-6, rtol=0)
    # the step is 1.25 eps, so the ball clamp bites wherever the start and the sign agree
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert ((x_adv - x).abs() > eps - 1e-6).float().mean() > 0.2


def test_nfgsm_one_step_matches_the_reference_formula_and_leaves_the_eps_ball():
    x, y = images()
    model = binary_linear(x[0].numel())
    eps = E8
    attack = NFGSM(eps=eps)
    assert attack.alpha == pytest.approx(eps) and attack.k == 2 and attack.clip == -1
    assert attack.radius() == pytest.approx(3 * eps)
    torch.manual_seed(5)
    x_adv = attack(model, x, y)
    # N-FGSM train.py:216-233: noise U(-2eps, 2eps), image clamp, step eps, image clamp, no ball
    xd = x.double()
    eta = start_draw(5, x.shape, -2 * eps, 2 * eps)
    eta = torch.minimum(torch.maximum(eta, -xd), 1 - xd)
    delta = eta + eps * grad_sign(model, y).view_as(xd)
    delta = torch.minimum(torch.maximum(delta, -xd), 1 - xd)
    assert torch.allclose(x_adv.double(), xd + delta, atol=1e-6, rtol=0)
    dist = (x_adv - x).abs().amax()
    assert dist > 1.5 * eps  # no projection back to the eps ball
    assert dist <= 3 * eps + 1e-6


def test_nfgsm_clip_bounds_the_perturbation():
    x, y = images()
    model = binary_linear(x[0].numel())
    attack = NFGSM(eps=E8, clip=1.0)
    assert attack.radius() == pytest.approx(E8)
    assert (attack(model, x, y) - x).abs().max() <= E8 + 1e-6


def test_radius_is_the_postcondition_not_eps():
    """A subclass that steps outside its declared radius is caught (the base check is not loosened)."""

    class Leaky(NFGSM):
        def radius(self):
            return self.eps  # lies: the step goes to 3 eps

    x, y = images()
    model = binary_linear(x[0].numel())
    with pytest.raises(RuntimeError, match="left the Linf ball"):
        Leaky(eps=E8)(model, x, y)


def test_single_step_settings_and_budget():
    a = FGSMRS(eps=E8)
    assert a.alpha == pytest.approx(10 / 255) and a.bn_mode == "train"
    a.set_budget(4 / 255, 5 / 255, 1)
    assert (a.eps, a.alpha) == (4 / 255, 5 / 255)
    a.set_budget(E8, E8, 5)  # one step whatever the schedule's step count (as FGSM)
    assert (a.eps, a.alpha) == (E8, E8)
    with pytest.raises(AttackError, match="Linf"):
        FGSMRS(eps=E8, norm="L2")
    with pytest.raises(AttackError, match="k = -1.0 must be >= 0"):
        NFGSM(k=-1.0)


def test_single_step_attacks_use_train_mode_and_restore_it():
    seen = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2), nn.BatchNorm1d(2))
    model[2].register_forward_hook(lambda m, i, o: seen.append(m.training))
    model.eval()
    x, y = images()
    FGSMRS()(model, x, y)
    NFGSM()(model, x, y)
    assert seen and all(seen) and not model.training


# ----------------------------------------------------------------------------- APGD training attack

class Bowl(nn.Module):
    """f(x)_j = w_j·x + a_j‖x − 0.5‖²: class 0's CE peaks near x = 0.5, so a 2ε step from a point
    close to it lowers the loss (APGD then keeps the clean point), while class 1's CE grows away."""

    def __init__(self, W, a):
        super().__init__()
        self.W, self.a = nn.Parameter(W), nn.Parameter(a)

    def forward(self, x):
        f = x.flatten(1)
        return f @ self.W.T + ((f - 0.5) ** 2).sum(1, keepdim=True) * self.a


def apgd2_reference(W, a, x, y, eps, target=None):
    """SPEC §13.4 (revisiting-at apgd_train, n_iter = 2) in float64 for the :class:`Bowl` model,
    its input gradient written out: ∂CE/∂x = Σ_j (p_j − t_j)(w_j + 2a_j(x − 0.5)) with the target
    distribution t (one-hot of y, or ``target``: a soft, smoothed row per example), CE = −Σ_j t_j log p_j."""
    t = torch.nn.functional.one_hot(y, W.shape[0]).double() if target is None else target

    def ce_grad(v):
        f = v.flatten(1)
        z = f @ W.T + ((f - 0.5) ** 2).sum(1, keepdim=True) * a
        logp = torch.log_softmax(z, 1)
        r = logp.exp() - t
        grad = r @ W + 2 * (r @ a).view(-1, 1) * (f - 0.5)
        return -(t * logp).sum(1), grad.view_as(v)

    def P(v):
        return torch.minimum(torch.maximum(v, x - eps), x + eps).clamp(0, 1)

    s = 2 * eps
    L0, g0 = ce_grad(x)
    x1 = P(x + s * g0.sign())
    L1, g1 = ce_grad(x1)
    z = P(x1 + s * g1.sign())
    x2 = P(x1 + 0.75 * (z - x1) + 0.25 * (x1 - x))
    L2, _ = ce_grad(x2)
    best, Lbest, chosen = x.clone(), L0.clone(), torch.zeros(len(y), dtype=torch.long)
    for i, (pt, L) in enumerate(((x1, L1), (x2, L2)), start=1):
        better = L > Lbest
        best[better], Lbest[better], chosen[better] = pt[better], L[better], i
    return best, chosen, torch.cat([g0.flatten(), g1.flatten()])


def test_apgd_two_steps_match_the_revisiting_at_formula():
    eps = 8 / 255
    g = torch.Generator().manual_seed(0)
    W = torch.randn(2, 48, generator=g, dtype=torch.float64) * 0.005
    a = torch.tensor([0.0, -5.0], dtype=torch.float64)
    sign = torch.where(torch.rand(4, 48, generator=g) < 0.5, -1.0, 1.0).double()
    near = 0.5 + (0.2 + 0.2 * torch.rand(4, 48, generator=g, dtype=torch.float64)) * eps * sign
    x = torch.cat([near, torch.rand(4, 48, generator=g, dtype=torch.float64)]).view(8, 3, 4, 4)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    expected, chosen, grads = apgd2_reference(W, a, x, y, eps)
    assert grads.abs().min() > 1e-4  # no gradient coordinate near 0: every sign is determined
    assert set(chosen.tolist()) >= {0, 1}  # the clean point wins for some examples, a step for others
    model = Bowl(W.clone(), a.clone())
    x_adv = APGDTrain(eps=eps, steps=2)(model, x, y)
    assert torch.allclose(x_adv, expected, atol=1e-6, rtol=0)
    assert torch.equal(x_adv[:4], x[:4])
    assert (x_adv - x).abs().max() <= eps + 1e-9


def test_apgd_on_smoothed_soft_targets_matches_the_revisiting_at_formula():
    """revisiting-at attacks timm Mixup's target: lam·e_a + (1 − lam)·e_b with label smoothing s
    inside, (1 − s)·mix + s/K (timm mixup_target, main.py:604-607), per-example soft CE
    (autopgd_train_clean.py:113). Here the mixed target comes unsmoothed with label_smoothing 0.1."""
    eps, s, K = 8 / 255, 0.1, 3
    g = torch.Generator().manual_seed(8)  # a draw where the smoothing flips some gradient signs
    W = torch.randn(K, 48, generator=g, dtype=torch.float64) * 0.005
    a = torch.tensor([0.0, -5.0, 1.0], dtype=torch.float64)
    sign = torch.where(torch.rand(4, 48, generator=g) < 0.5, -1.0, 1.0).double()
    near = 0.5 + (0.2 + 0.2 * torch.rand(4, 48, generator=g, dtype=torch.float64)) * eps * sign
    x = torch.cat([near, torch.rand(4, 48, generator=g, dtype=torch.float64)]).view(8, 3, 4, 4)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2, 1])
    lam = torch.tensor([0.9, 0.7, 1.0, 0.8, 0.6, 0.9, 0.75, 1.0], dtype=torch.float64).view(-1, 1)
    eye = torch.eye(K, dtype=torch.float64)
    mixed = lam * eye[y] + (1 - lam) * eye[y.flip(0)]  # timm's partner: the flipped batch
    smoothed = (1 - s) * mixed + s / K
    expected, chosen, grads = apgd2_reference(W, a, x, y, eps, target=smoothed)
    assert grads.abs().min() > 1e-4  # every sign determined
    assert set(chosen.tolist()) >= {0, 1}
    model = Bowl(W.clone(), a.clone())
    x_adv = APGDTrain(eps=eps, steps=2, label_smoothing=s)(model, x, mixed)
    assert torch.allclose(x_adv, expected, atol=1e-6, rtol=0)
    # unsmoothed: another target, other points for some examples (the option is not a no-op)
    plain, _, _ = apgd2_reference(W, a, x, y, eps, target=mixed)
    assert (plain - expected).abs().max() > eps / 2
    assert torch.allclose(APGDTrain(eps=eps, steps=2)(model, x, mixed), plain, atol=1e-6, rtol=0)
    # hard labels smoothed: the one-hot target smoothed the same way
    hard, _, _ = apgd2_reference(W, a, x, y, eps, target=(1 - s) * eye[y] + s / K)
    assert torch.allclose(APGDTrain(eps=eps, steps=2, label_smoothing=s)(model, x, y), hard, atol=1e-6, rtol=0)


def test_apgd_settings():
    a = APGDTrain()
    assert (a.eps, a.steps, a.bn_mode) == (4 / 255, 2, "eval")
    a.set_budget(8 / 255, 123.0, 3)
    assert (a.eps, a.steps) == (8 / 255, 3)
    with pytest.raises(AttackError, match="steps >= 1"):
        APGDTrain(steps=0)
    with pytest.raises(AttackError, match="loss"):
        APGDTrain(loss="kl")
    with pytest.raises(AttackError, match="label_smoothing"):
        APGDTrain(label_smoothing=1.0)
    with pytest.raises(AttackError, match="label_smoothing 0"):
        APGDTrain(loss="dlr", label_smoothing=0.1)
