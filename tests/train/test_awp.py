"""AWP: which weights move, by how much, what stays untouched, restore, warm-up."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advtrain.errors import InputError
from advtrain.train.awp import AWP, perturbed_names
from advtrain.config import build_objective

C = 10


def tiny_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, C))


def setup(name="trades", **kw):
    torch.manual_seed(0)
    model = tiny_cnn()
    with torch.no_grad():  # non-trivial BN affine params, so "untouched" is a real check
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.1, 0.1)
    obj = build_objective(name, dataset="cifar10", num_classes=C, steps=1, **kw)
    x = torch.rand(8, 3, 16, 16)
    y = torch.arange(8) % C
    return model, obj, x, y, obj.perturb(model, x, y)


def test_names_are_conv_and_linear_weights():
    assert perturbed_names(tiny_cnn()) == ["0.weight", "3.weight", "8.weight"]


@pytest.mark.parametrize("name", ["trades", "pgd_at", "gkl_at", "lbgat"])
def test_relative_step_and_untouched_rest(name):
    kw = {"natural_model": tiny_cnn()} if name == "lbgat" else {}
    model, obj, x, y, x_adv = setup(name, **kw)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    obj_state = {k: v.clone() for k, v in obj.state_dict().items()}
    awp = AWP(model, gamma=0.01, warmup=0)
    diff = awp.perturb(obj, x, x_adv, y)
    after = model.state_dict()
    assert sorted(diff) == ["0.weight", "3.weight", "8.weight"]
    for key in before:
        if key in diff:
            ratio = (after[key] - before[key]).norm() / before[key].norm()
            assert ratio.item() == pytest.approx(0.01, rel=1e-4)
        else:  # biases, BN affine, BN running stats and counters
            assert torch.equal(after[key], before[key]), key
    assert all(torch.equal(obj_state[k], v) for k, v in obj.state_dict().items())
    assert all(p.grad is None for p in [*model.parameters(), *obj.extra_parameters()])
    awp.restore(diff)
    for key, value in model.state_dict().items():
        assert torch.allclose(value, before[key], atol=1e-7, rtol=0), key


def test_direction_ascends_the_objective_loss():
    model, obj, x, y, x_adv = setup("trades")
    model.train()
    awp = AWP(model, gamma=0.02, warmup=0)
    with torch.no_grad():
        base = obj.awp_loss(model, x, x_adv, y)
    diff = awp.perturb(obj, x, x_adv, y)
    with torch.no_grad():
        raised = obj.awp_loss(model, x, x_adv, y)
    awp.restore(diff)
    assert raised > base


def test_proxy_is_reused_and_follows_the_model():
    model, obj, x, y, x_adv = setup("pgd_at")
    awp = AWP(model, gamma=0.01, warmup=0)
    awp.restore(awp.perturb(obj, x, x_adv, y))
    proxy = awp._proxy
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    current = model[0].weight.detach().clone()
    awp.perturb(obj, x, x_adv, y)
    assert awp._proxy is proxy
    assert torch.equal(proxy[0].weight, current)  # refreshed from the model, not perturbed itself


def test_active_and_validation():
    awp = AWP(tiny_cnn(), gamma=0.005, warmup=10)
    assert [awp.active(e) for e in (1, 9, 10, 11)] == [False, False, True, True]
    assert AWP(tiny_cnn(), gamma=0.01, warmup=0).active(1)
    assert not AWP(tiny_cnn(), gamma=0.0, warmup=0).active(5)
    with pytest.raises(InputError, match="gamma"):
        AWP(tiny_cnn(), gamma=-0.1)
    with pytest.raises(InputError, match="warmup"):
        AWP(tiny_cnn(), warmup=1.5)
