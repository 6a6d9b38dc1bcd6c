"""Objectives: registry, option validation, loss reductions, gradients, prior handling, descent."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advtrain.errors import InputError, UnknownNameError
from advtrain.config import build_objective
from advtrain.objectives import DISTILLATION, OBJECTIVES, objective_defaults
from spec_reference import gkl_rob, ikl_rob, kl_rows

C = 10


def tiny_cnn(num_classes=C, width=8):
    """Two convs with BN, global pool, linear: enough to exercise BN modes and every param kind."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


def spread_cnn():
    """tiny_cnn in eval mode with a scaled head, so logits (and wMSE terms) are not all near 0."""
    model = tiny_cnn().eval()
    with torch.no_grad():
        model[-1].weight.mul_(20)
    return model


def make(name, **kw):
    if name == "lbgat":
        kw.setdefault("natural_model", tiny_cnn())
    if name in DISTILLATION:
        kw.setdefault("teacher", spread_cnn())
    kw.setdefault("steps", 2)
    return build_objective(name, dataset="cifar10", num_classes=C, **kw)


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=g)
    y = torch.arange(n) % C
    return x, y


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_loss_finite_and_grads_reach_all_params(name):
    model, obj = tiny_cnn(), make(name)
    x, y = batch()
    x_adv = obj.perturb(model, x, y)
    assert (x_adv - x).abs().max() <= obj.attack.eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    model.train()
    loss, terms = obj.loss(model, x, x_adv, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert "acc_adv" in terms and 0 <= terms["acc_adv"] <= 1
    assert torch.allclose(terms["loss"], loss.detach())
    assert all(not v.requires_grad for v in terms.values())
    loss.backward()
    params = [*model.parameters(), *obj.extra_parameters()]
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_lbgat_extra_parameters_are_the_natural_model():
    obj = make("lbgat")
    assert [id(p) for p in obj.extra_parameters()] == [id(p) for p in obj.natural_model.parameters()]
    assert any(k.startswith("natural_model.") for k in obj.state_dict())
    assert make("trades").extra_parameters() == []


def test_lbgat_default_natural_model_is_resnet18():
    obj = build_objective("lbgat", dataset="cifar100", num_classes=100)
    out = obj.natural_model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 100)


def test_unknown_objective_and_option():
    with pytest.raises(UnknownNameError, match="did you mean .*'gkl_at'"):
        build_objective("gkl", dataset="cifar10", num_classes=C)
    with pytest.raises(UnknownNameError, match="betta"):
        build_objective("trades", dataset="cifar10", num_classes=C, betta=6)


@pytest.mark.parametrize("name,key,value", [
    ("trades", "beta", -1.0), ("gkl_at", "alpha", -0.5), ("gkl_at", "gamma", -1.0),
    ("ikl_at", "loss_T", 0.0), ("pgd_at", "eps", -0.1), ("ikl_at", "prior_momentum", 0.0),
    ("trades", "label_smoothing", 1.0), ("pgd_at", "steps", 2.5), ("ikl_at", "two_view", "yes"),
    ("trades", "eps", "eight"),
])
def test_bad_option_values(name, key, value):
    with pytest.raises(InputError, match=key):
        make(name, **{key: value})


def test_bad_choice_is_unknown_name():
    with pytest.raises(UnknownNameError, match="Linf"):
        make("pgd_at", norm="linf2")


def test_defaults_per_dataset_and_eps_fraction():
    assert objective_defaults("ikl_at", "cifar10")["attack_beta"] == 0.0
    assert objective_defaults("gkl_at", "cifar100")["attack_beta"] == 1.0
    assert "gamma" in objective_defaults("gkl_at") and "gamma" not in objective_defaults("ikl_at")
    obj = make("pgd_at", eps="8/255")
    assert obj.attack.eps == pytest.approx(8 / 255)


def test_set_attack_budget():
    obj = make("trades")
    obj.set_attack_budget(4 / 255, 2 / 255, 5)
    assert (obj.attack.eps, obj.attack.alpha, obj.attack.steps) == (4 / 255, 2 / 255, 5)
    model, (x, y) = tiny_cnn(), batch()
    assert (obj.perturb(model, x, y) - x).abs().max() <= 4 / 255 + 1e-6


def test_trades_beta0_is_ce_and_value_matches_formula():
    # spread logits and a large perturbation: the KL is far from 0, so its sign cannot hinge on rounding
    model, (x, y) = spread_cnn(), batch()
    x_adv = 0.2 * x  # darker images: pooled features and predictions really change
    loss0, _ = make("trades", beta=0.0).loss(model, x, x_adv, y)
    assert torch.allclose(loss0, F.cross_entropy(model(x), y))
    loss6, terms = make("trades", beta=6.0).loss(model, x, x_adv, y)
    expected = F.cross_entropy(model(x), y) + 6.0 * kl_rows(model(x), model(x_adv)).mean()
    assert torch.allclose(loss6, expected) and terms["kl"] > 1e-2


def test_label_smoothing_changes_ce():
    model, (x, y) = tiny_cnn().eval(), batch()
    loss, _ = make("pgd_at", label_smoothing=0.1).loss(model, x, x, y)
    assert torch.allclose(loss, F.cross_entropy(model(x), y, label_smoothing=0.1))


def test_lbgat_beta0_still_forwards_clean_input_and_has_no_kl():
    """The reference runs f_r(x') then f_r(x) (train mode) whatever beta: two forwards, BN stats of that order."""
    model, (x, y) = tiny_cnn().train(), batch()
    ref, swapped = copy.deepcopy(model), copy.deepcopy(model)
    obj = make("lbgat", beta=0.0)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    x_adv = 0.2 * x  # darker images: batch statistics clearly differ from the clean ones
    loss, terms = obj.loss(model, x, x_adv, y)
    assert len(seen) == 2 and seen[0] is x_adv and seen[1] is x
    assert "kl" not in terms and "rob" not in terms
    with torch.no_grad():
        a, _ = ref(x_adv), ref(x)
        swapped(x), swapped(x_adv)
        g = copy.deepcopy(obj.natural_model).train()(x)  # batch statistics: the logits loss() saw
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(model[1], k), getattr(ref[1], k))
    assert (model[1].running_mean - swapped[1].running_mean).abs().max() > 1e-3  # order is visible
    assert torch.allclose(loss.detach(), ((a - g) ** 2).mean() + F.cross_entropy(g, y), rtol=1e-5)


def test_lbgat_update_state_false_keeps_natural_bn_stats():
    model, (x, y) = tiny_cnn(), batch()
    obj = make("lbgat")
    model.train()
    before = {k: v.clone() for k, v in obj.natural_model.state_dict().items()}
    obj.loss(model, x, x, y, update_state=False)
    assert all(torch.equal(before[k], v) for k, v in obj.natural_model.state_dict().items())
    obj.loss(model, x, x, y)
    assert not torch.equal(before["1.running_mean"], obj.natural_model.state_dict()["1.running_mean"])


def _set_prior(obj, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(C, C, generator=g) + 0.05
    obj.prior.weight.copy_(w / w.sum(1, keepdim=True))


def test_gkl_gamma1_equals_ikl_and_formula():
    model, (x, y) = spread_cnn(), batch()
    x_adv = torch.rand_like(x)
    ikl, gkl = make("ikl_at"), make("gkl_at", gamma=1.0)
    _set_prior(ikl), _set_prior(gkl)
    l1, t1 = ikl.loss(model, x, x_adv, y)
    l2, t2 = gkl.loss(model, x, x_adv, y)
    assert torch.allclose(l1, l2, rtol=1e-5)
    assert torch.allclose(t1["wmse"], t2["wmse"], rtol=1e-5)
    a, n = model(x_adv), model(x)
    w = ikl.prior.weight[y]
    expected = F.cross_entropy(n, y) + ikl_rob(a.double(), n.double(), w.double(), 4.0, 20.0).float()
    assert torch.allclose(l1, expected, rtol=1e-5)
    gkl_half = make("gkl_at", gamma=0.5)
    _set_prior(gkl_half)
    _, t3 = gkl_half.loss(model, x, x_adv, y)
    assert t2["wmse"] > 0 and not torch.allclose(t3["wmse"], t2["wmse"], rtol=1e-3)


def test_gkl_without_prior_uses_per_sample_softmax():
    model, (x, y) = spread_cnn(), batch()
    x_adv = torch.rand_like(x)
    obj = make("gkl_at", use_prior=False, gamma=0.5)
    _set_prior(obj)  # must be ignored
    loss, terms = obj.loss(model, x, x_adv, y)
    a, n = model(x_adv).double(), model(x).double()
    rob = gkl_rob(a, n, n.softmax(1), 4.0, 20.0, 0.5)
    assert torch.allclose(loss.double(), F.cross_entropy(n, y) + rob, rtol=1e-5)
    wmse = gkl_rob(a, n, n.softmax(1), 0.0, 1.0, 0.5)
    assert torch.allclose(terms["wmse"].double(), wmse, rtol=1e-5)
    peaked = torch.full((C, C), 1e-3).fill_diagonal_(1.0)  # far from any softmax(n) row
    obj.prior.weight.copy_(peaked / peaked.sum(1, keepdim=True))
    loss_peaked, _ = obj.loss(model, x, x_adv, y)
    assert torch.allclose(loss_peaked, loss, rtol=1e-6)  # the prior really is ignored
    wmse_peaked = gkl_rob(a, n, obj.prior.weight[y].double(), 0.0, 1.0, 0.5)
    assert (wmse - wmse_peaked).abs() > 0.1 * wmse  # ... and would have mattered


def test_loss_T_scales_soft_ce():
    model, (x, y) = tiny_cnn().eval(), batch()
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    for name in ("ikl_at", "gkl_at"):
        _, t1 = make(name).loss(model, x, x_adv, y)
        _, t4 = make(name, loss_T=4.0).loss(model, x, x_adv, y)
        a, n = model(x_adv), model(x)
        expected = -(F.softmax(n / 4, 1) * F.log_softmax(a / 4, 1)).sum(1).mean()
        assert torch.allclose(t4["soft_ce"], expected, rtol=1e-5)
        assert torch.allclose(t4["wmse"], t1["wmse"])


@pytest.mark.parametrize("name", ["ikl_at", "gkl_at"])
def test_prior_after_epoch_is_class_mean_of_tempered_softmax(name):
    obj, model = make(name, prior_T=2.0), tiny_cnn().train()
    assert torch.allclose(obj.prior.weight, torch.full((C, C), 1 / C))  # epoch 1: uniform
    # the natural logits loss() saw (train-mode BN, so they cannot be recomputed): capture them
    captured, ys = [], []
    model.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    for seed in range(3):
        x, _ = batch(n=16, seed=seed)
        y = torch.randint(0, C, (16,), generator=torch.Generator().manual_seed(seed))
        y[:C] = torch.arange(C)
        ys.append(y)
        obj.loss(model, x, torch.rand_like(x), y)
    nat = torch.cat(captured[1::2])  # forwards alternate adv, nat
    probs, labels = F.softmax(nat / 2.0, 1), torch.cat(ys)
    expected = torch.stack([probs[labels == c].mean(0) for c in range(C)])
    obj.on_epoch_end()
    assert torch.allclose(obj.prior.weight, expected, atol=1e-6)
    assert torch.allclose(obj.prior.weights(labels[:4]), expected[labels[:4]])
    assert obj.prior.accum.abs().sum() == 0  # reset for the next epoch


def test_update_state_false_leaves_prior_untouched():
    model, (x, y) = tiny_cnn().train(), batch()
    obj = make("gkl_at")
    state = {k: v.clone() for k, v in obj.state_dict().items()}
    obj.loss(model, x, x, y, update_state=False)
    obj.awp_loss(model, x, x, y)
    assert all(torch.equal(state[k], v) for k, v in obj.state_dict().items())
    obj.loss(model, x, x, y)
    assert obj.prior.accum.sum() > 0


def two_view_batch(b=4):
    x, y = batch(n=2 * b)
    return x, torch.cat([y[:b], y[:b]])


@pytest.mark.parametrize("name", ["ikl_at", "gkl_at"])
def test_two_view_halves_and_aug_weight(name):
    model, (x, y) = tiny_cnn().eval(), two_view_batch()
    x_adv = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    obj = make(name, two_view=True, aug_weight=0.3)
    _set_prior(obj)
    loss, terms = obj.loss(model, x, x_adv, y)
    a, n = model(x_adv).double(), model(x).double()
    u = obj.prior.weight[y].double()

    def rob(s):
        if name == "ikl_at":
            return ikl_rob(a[s], n[s], u[s], 4.0, 20.0)
        return gkl_rob(a[s], n[s], u[s], 4.0, 20.0, 1.0)

    rob_a, rob_b = rob(slice(0, 4)), rob(slice(4, 8))
    assert torch.allclose(loss.double(), F.cross_entropy(n, y) + rob_a + 0.3 * rob_b, rtol=1e-5)
    assert "wmse_aug" in terms and "soft_ce_aug" in terms
    # AWP proxy loss: one group over all 2B rows, no aug weight
    awp = obj.awp_loss(model, x, x_adv, y)
    assert torch.allclose(awp.double(), F.cross_entropy(n, y) + rob(slice(0, 8)), rtol=1e-5)


def test_two_view_prior_uses_first_half_only():
    model, (x, y) = tiny_cnn().eval(), two_view_batch()
    obj = make("ikl_at", two_view=True, prior_T=4.0)
    obj.loss(model, x, x, y)
    expected = torch.zeros(C, C).index_add_(0, y[:4], F.softmax(model(x[:4]) / 4.0, 1))
    assert torch.allclose(obj.prior.accum, expected, atol=1e-6)
    with pytest.raises(InputError, match="two_view"):
        obj.loss(model, x, x, torch.arange(8) % C)


@pytest.mark.parametrize("name", ["ikl_at", "gkl_at"])
def test_attack_uses_current_prior_weights(name):
    obj = make(name, attack_beta=1.0)
    assert obj.attack.loss.weights_fn is not None
    y = torch.tensor([0, 3])
    _set_prior(obj)
    assert torch.equal(obj.attack.loss.weights_fn(y), obj.prior.weight[y])


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_sgd_steps_lower_the_loss(name):
    torch.manual_seed(0)
    model, obj = tiny_cnn(), make(name, steps=1)
    x, y = batch(n=16)
    x_adv = obj.perturb(model, x, y)
    params = [*model.parameters(), *obj.extra_parameters()]
    model.train()
    first = None
    for _ in range(8):
        loss, _ = obj.loss(model, x, x_adv, y, update_state=False)
        first = loss.item() if first is None else first
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():  # plain SGD (torch.optim's first import costs seconds)
            for p, g in zip(params, grads):
                p.sub_(0.05 * g)
    assert loss.item() < first


def test_none_keeps_default_and_integral_float_steps():
    obj = make("trades", attack_init=None, steps=3.0)
    assert obj.attack.init == "normal" and obj.attack.steps == 3 and isinstance(obj.attack.steps, int)


def test_state_dict_round_trip_restores_prior():
    model, (x, y) = tiny_cnn().train(), batch()
    obj = make("gkl_at")
    obj.loss(model, x, torch.rand_like(x), y)
    obj.on_epoch_end()
    fresh = make("gkl_at")
    assert not torch.allclose(fresh.prior.weight, obj.prior.weight)
    fresh.load_state_dict(obj.state_dict())
    assert torch.equal(fresh.prior.weight, obj.prior.weight)
    assert torch.equal(fresh.attack.loss.weights_fn(y), obj.prior.weight[y])
