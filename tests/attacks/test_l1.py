"""The L1 threat model of the attack library: the exact projection onto the L1 ball (Duchi et al.
2008), SLIDE's sparse L1 step (Tramèr & Boneh 2019), the uniform start in the L1 ball, PGD-L1 on a
tiny model, and which training attacks run L1 (their Options say so; the others refuse in one line).

Every expected value comes from an expression written here in float64 (numpy), not from the code
under test."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attacks import NORMS, PGD, TRAINING_ATTACKS, AttackError
from attacks.base import flat_norm, project, project_l1_ball
from attacks.options import option_choices
from attacks.pgd import L1_SPARSITY, l1_direction, uniform_l1_ball


def soft_threshold_by_bisection(v: np.ndarray, eps: float) -> np.ndarray:
    """The projection of one vector onto {‖w‖₁ ≤ eps} from its optimality conditions: inside, v;
    outside, sign(v)·max(|v| − θ, 0) with θ > 0 solving Σ max(|v_i| − θ, 0) = eps (bisection)."""
    if np.abs(v).sum() <= eps:
        return v.copy()
    lo, hi = 0.0, float(np.abs(v).max())
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.maximum(np.abs(v) - mid, 0).sum() > eps:
            lo = mid
        else:
            hi = mid
    theta = 0.5 * (lo + hi)
    return np.sign(v) * np.maximum(np.abs(v) - theta, 0)


def test_l1_is_a_norm_of_the_one_owner():
    assert "L1" in NORMS
    x = torch.tensor([[0.5, -2.0, 0.25], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert flat_norm(x, "L1").tolist() == [2.75, 0.0]


@pytest.mark.parametrize("eps", [0.3, 2.0, 7.5])
def test_l1_projection_is_the_soft_threshold_with_the_bisected_threshold(eps):
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(6, 3, 4, 4, generator=gen, dtype=torch.float64)
    delta[1] *= 1e-3  # well inside every ball: returned unchanged
    delta[2, 0] = 0.0  # zeros stay zero
    out = project_l1_ball(delta, eps)
    for i in range(delta.shape[0]):
        v = delta[i].reshape(-1).numpy()
        want = soft_threshold_by_bisection(v, eps)
        np.testing.assert_allclose(out[i].reshape(-1).numpy(), want, rtol=0, atol=1e-9)
        norm = np.abs(out[i].numpy()).sum()
        if np.abs(v).sum() > eps:
            assert norm == pytest.approx(eps, rel=1e-9)  # on the sphere
        else:
            np.testing.assert_array_equal(out[i].reshape(-1).numpy(), v)
    # optimality: no point of the ball is closer (a few feasible points of the sphere tried)
    for i in range(delta.shape[0]):
        v, p = delta[i].reshape(-1).numpy(), out[i].reshape(-1).numpy()
        rng = np.random.default_rng(i)
        for _ in range(20):
            w = rng.laplace(size=v.size)
            w = w / np.abs(w).sum() * eps
            assert np.linalg.norm(v - p) <= np.linalg.norm(v - w) + 1e-12


def test_l1_projection_of_an_imagenet_sized_float32_batch_lands_on_the_sphere():
    gen = torch.Generator().manual_seed(5)
    delta = 0.1 * torch.randn(2, 3, 224, 224, generator=gen)
    out = project_l1_ball(delta, 75.0)
    assert out.dtype == torch.float32
    norms = out.double().abs().sum(dim=(1, 2, 3))
    assert norms.tolist() == pytest.approx([75.0, 75.0], rel=1e-5)


def test_l1_projection_with_radius_zero_is_zero():
    delta = torch.randn(3, 5, dtype=torch.float64)
    assert torch.equal(project_l1_ball(delta, 0.0), torch.zeros_like(delta))


def test_project_then_clip_stays_in_the_ball_and_the_box():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 5, 5, generator=gen, dtype=torch.float64)
    x_adv = x + 3 * torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64)
    out = project(x_adv, x, 4.0, "L1")
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((out - x).abs().sum(dim=(1, 2, 3)).max()) <= 4.0 + 1e-9


@pytest.mark.parametrize("q", [L1_SPARSITY, 90.0, 0.0])
def test_slide_step_moves_the_top_percentile_by_sign_with_unit_l1_norm(q):
    gen = torch.Generator().manual_seed(2)
    grad = torch.randn(3, 3, 8, 8, generator=gen, dtype=torch.float64)
    out = l1_direction(grad, q)
    d = 3 * 8 * 8
    k = max(int(q / 100.0 * d), 1)
    for i in range(3):
        g = grad[i].reshape(-1).numpy()
        t = np.sort(np.abs(g))[k - 1]  # the k-th smallest |g|
        chosen = np.abs(g) >= t
        want = np.sign(g) * chosen / chosen.sum()
        np.testing.assert_allclose(out[i].reshape(-1).numpy(), want, rtol=0, atol=1e-15)
        assert chosen.sum() == d - k + 1  # no ties in a Gaussian draw
        assert np.abs(out[i].numpy()).sum() == pytest.approx(1.0, rel=1e-12)
    step = PGD(eps=5.0, alpha=0.7, steps=1, norm="L1", l1_sparsity=q).direction(grad) * 0.7
    assert flat_norm(step, "L1").tolist() == pytest.approx([0.7] * 3, rel=1e-12)


def test_l1_sparsity_is_a_percentile():
    for bad in (100, 120.0, -1):
        with pytest.raises(AttackError, match="l1_sparsity"):
            PGD(norm="L1", l1_sparsity=bad)


def test_uniform_start_is_uniform_in_the_l1_ball():
    """d = 2: the L1 ball is a square of area 2ε²; uniform points fall within radius ε/2 with
    probability 1/4, at |δ₁| ≤ ε/2 with probability 3/4, in each quadrant with probability 1/4."""
    torch.manual_seed(3)
    n, eps = 20000, 0.4
    x = torch.full((n, 2), 0.5, dtype=torch.float64)  # x ± 0.4 stays inside [0, 1]: no clipping
    delta = PGD(eps=eps, norm="L1", init="uniform").initial_point(x) - x
    r = delta.abs().sum(1)
    assert float(r.max()) <= eps + 1e-12
    assert float((r <= eps / 2).double().mean()) == pytest.approx(0.25, abs=0.02)
    assert float((delta[:, 0].abs() <= eps / 2).double().mean()) == pytest.approx(0.75, abs=0.02)
    assert float(((delta[:, 0] > 0) & (delta[:, 1] > 0)).double().mean()) == pytest.approx(0.25, abs=0.02)
    big = uniform_l1_ball(torch.zeros(64, 3, 8, 8, dtype=torch.float64), 2.0)
    assert float(flat_norm(big, "L1").max()) <= 2.0 + 1e-12


def _tiny():
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5)).double()
    x = torch.rand(16, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("init", ["none", "uniform"])
def test_pgd_l1_stays_in_the_ball_and_the_box_and_raises_the_loss(init):
    model, x, y = _tiny()
    eps = 2.0
    x_adv = PGD(eps=eps, alpha=0.5, steps=10, norm="L1", init=init)(model, x, y)
    assert float((x_adv - x).abs().sum(dim=(1, 2, 3)).max()) <= eps * (1 + 1e-9)
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        clean, adv = F.cross_entropy(model(x), y), F.cross_entropy(model(x_adv), y)
    assert float(adv) > float(clean) + 0.05, (float(clean), float(adv))


def test_which_training_attacks_run_l1():
    """Their Options declare it: pgd, pgd_best and none take norm L1; the single-step attacks and
    apgd (pyautoattack's L1-APGD from the clean point moves one pixel a step) refuse it in one line
    naming the norms they run."""
    takes = sorted(n for n, c in TRAINING_ATTACKS.items() if "L1" in option_choices(c.Options, "norm"))
    assert takes == ["none", "pgd", "pgd_best"]
    for name in ("fgsm", "fgsm_rs", "n_fgsm", "apgd"):
        with pytest.raises(AttackError, match=r"does not run the L1 threat model \(its norms: Linf") as e:
            TRAINING_ATTACKS[name](eps=1.0, norm="L1")
        assert "\n" not in str(e.value)


def test_pgd_best_runs_l1_inside_the_ball():
    model, x, y = _tiny()
    model, x = model.float(), x.float()
    for name in ("pgd_best",):
        attack = TRAINING_ATTACKS[name](norm="L1", loss="ce")
        attack.set_budget(3.0, 1.0, 3)
        x_adv = attack(model, x, y)  # the base class's postcondition checks ball and box
        assert float((x_adv - x).abs().sum(dim=(1, 2, 3)).max()) <= 3.0 * (1 + 1e-5)
        assert float((x_adv - x).abs().sum()) > 0
