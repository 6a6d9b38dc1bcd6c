"""Every objective against an independent float64 expression written here from SPEC (no advtrain.losses).

For each objective the loss value, the parameter gradients and the BatchNorm side effects (number
and order of train-mode forwards, seen in running_mean / running_var / num_batches_tracked) are
compared with a reference that runs its own forwards, in the order of the method's reference code,
on a copy of the model. The last test runs one full trainer step and compares the weights it
produces with an independent step: the same forwards, this file's loss, and SGD written out.

Forward orders (train mode): PGD-AT ``f(x')``; TRADES, IKL-AT, GKL-AT ``f(x')`` then ``f(x)`` (DKL
code, SPEC §2.5 and its TRADES baseline §4.3); MART ``f(x)`` then ``f(x')`` (YisenWang/MART
``mart.py``); LBGAT ``f_r(x')``, ``f_r(x)`` (also for beta = 0), ``f_n(x)`` (SPEC §4.4,
dvlab-research/LBGAT ``lbgat.py``).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advtrain.config import build_objective
from spec_reference import spec_loss

C, B = 5, 8
#: float64 throughout: formula mistakes move results by >> 1e-6, float64 rounding by < 1e-12
TOL = dict(rtol=1e-8, atol=1e-10)

OPTIONS = {
    "pgd_at": {},
    "trades": {"beta": 3.0},
    "mart": {"beta": 5.0},
    "lbgat": {"beta": 2.0},
    "lbgat0": {"beta": 0.0},
    "ikl_at": {"alpha": 3.0, "beta": 7.0, "prior_T": 2.0},
    "gkl_at": {"alpha": 2.0, "beta": 5.0, "gamma": 0.5, "prior_T": 2.0},
}
ORDER = {  # train-mode forwards of the robust model, in order ("adv" = x', "nat" = x)
    "pgd_at": ["adv"], "trades": ["adv", "nat"], "mart": ["nat", "adv"],
    "lbgat": ["adv", "nat"], "lbgat0": ["adv", "nat"], "ikl_at": ["adv", "nat"],
    "gkl_at": ["adv", "nat"],
}


def net(num_classes=C, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes)).double()
    with torch.no_grad():
        model[-1].weight.mul_(6)  # logits spread over a few units: every term far from 0
    return model.train()


def known_prior(num_classes=C):
    """A fixed non-uniform class prior (rows sum to 1), exactly representable in float32."""
    z = torch.arange(num_classes * num_classes, dtype=torch.float64).reshape(num_classes, num_classes)
    return torch.softmax(2 * torch.sin(z), 1).float()


def inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(B, 3, 8, 8, generator=g, dtype=torch.float64)
    x_adv = 0.25 * x + 0.1 * torch.rand(B, 3, 8, 8, generator=g, dtype=torch.float64)
    return x, x_adv, torch.arange(B) % C


def spec_forward_and_loss(name, o, model, natural, x, x_adv, y, prior=None):
    """Train-mode forwards in the reference order, then the SPEC loss; returns (loss, logits_nat)."""
    out = {}
    for which in ORDER[name]:
        out[which] = model(x_adv if which == "adv" else x)
    guide = natural(x) if natural is not None else None
    loss = spec_loss(name, o, out.get("adv"), out.get("nat"), y, guide, prior)
    return loss, out.get("nat")


# ----------------------------------------------------------------------------- helpers
def build(name, natural=None):
    o = OPTIONS[name]
    obj_name = "lbgat" if name == "lbgat0" else name
    kw = {"natural_model": natural} if natural is not None else {}
    obj = build_objective(obj_name, dataset="cifar10", num_classes=C, **o, **kw)
    if name in ("ikl_at", "gkl_at"):
        obj.prior.weight.copy_(known_prior())
    return obj


def bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def assert_same_bn(ours, ref):
    assert list(ours) == list(ref)
    for k in ours:
        torch.testing.assert_close(ours[k], ref[k], **TOL, msg=k)


def bn_gap(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# ----------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_loss_grads_and_bn_side_effects_match_spec(name):
    model = net()
    natural = net(seed=1) if name.startswith("lbgat") else None
    ref_model, ref_natural, fresh = copy.deepcopy(model), copy.deepcopy(natural), copy.deepcopy(model)
    x, x_adv, y = inputs()
    obj = build(name, natural)

    loss, terms = obj.loss(model, x, x_adv, y)
    expected, ref_nat = spec_forward_and_loss(name, OPTIONS[name], ref_model, ref_natural, x, x_adv, y,
                                              known_prior())
    torch.testing.assert_close(loss, expected, **TOL)
    assert expected.item() > 0.1  # not a degenerate case

    params = [*model.parameters(), *obj.extra_parameters()]
    ref_params = [*ref_model.parameters(), *(ref_natural.parameters() if natural is not None else [])]
    grads = torch.autograd.grad(loss, params)
    ref_grads = torch.autograd.grad(expected, ref_params)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, **TOL)
    assert max(r.abs().max().item() for r in ref_grads) > 1e-3

    # BatchNorm: same number and order of train-mode forwards as the reference
    assert_same_bn(bn_state(model), bn_state(ref_model))
    assert int(model[1].num_batches_tracked) == len(ORDER[name])
    if len(ORDER[name]) > 1:  # the test can tell the orders apart
        with torch.no_grad():
            for which in reversed(ORDER[name]):
                fresh(x_adv if which == "adv" else x)
        assert bn_gap(bn_state(fresh), bn_state(ref_model)) > 1e-3
    if natural is not None:
        assert_same_bn(bn_state(natural), bn_state(ref_natural))
        assert int(natural[1].num_batches_tracked) == 1

    if name == "lbgat0":
        assert "kl" not in terms
    if name in ("ikl_at", "gkl_at"):  # SPEC §2.1: accumulate onehot(y)^T softmax(n / prior_T)
        onehot = F.one_hot(y, C).double()
        acc = onehot.T @ torch.softmax(ref_nat.detach() / OPTIONS[name]["prior_T"], 1)
        torch.testing.assert_close(obj.prior.accum.double(), acc, rtol=1e-5, atol=1e-6)


def test_mart_stabilisers_are_the_authors():
    """Saturated adversarial predictions (p' = 1 on a wrong class): the authors' 1.0001 / 1e-12 keep
    the margin term finite, and the loss still equals their expression."""
    model, (x, x_adv, y) = net(), inputs()
    with torch.no_grad():
        model[-1].weight.mul_(1e3)  # logit gaps in the thousands: exp underflows, p' is exactly 0 or 1
    ref, probe = copy.deepcopy(model), copy.deepcopy(model)
    loss, _ = build("mart").loss(model, x, x_adv, y)
    expected, _ = spec_forward_and_loss("mart", OPTIONS["mart"], ref, None, x, x_adv, y)
    torch.testing.assert_close(loss, expected, **TOL)
    with torch.no_grad():
        pa = torch.softmax(probe(x_adv), 1)  # train mode: batch statistics, the same logits
    wrong = pa.clone()
    wrong[torch.arange(B), y] = -1.0
    assert (wrong.max(1).values == 1.0).any()  # -log(1 - p') would be inf here


# ----------------------------------------------------------------------------- one trainer step
TRAIN_OPTIONS = {"pgd_at": {}, "trades": {"beta": 3.0}, "mart": {"beta": 5.0},
                 "lbgat": {"beta": 2.0, "natural_arch": "wrn-10-1"},
                 "ikl_at": {"alpha": 3.0, "beta": 7.0}, "gkl_at": {"alpha": 2.0, "beta": 5.0, "gamma": 0.5}}
OPTIM = {"epochs": 1, "lr": 0.05, "momentum": 0.8, "weight_decay": 5e-3, "nesterov": True,
         "wd_exclude_bn": True, "schedule": "piecewise", "milestones": []}


def _sgd_reference(modules, grads, o):
    """One torch-SGD step written out: d = g + wd p (no wd on BN), buf = d, nesterov d + m buf."""
    grads = iter(grads)
    with torch.no_grad():
        for module in modules:
            for sub in module.modules():
                bn = isinstance(sub, nn.modules.batchnorm._BatchNorm)
                for p in sub.parameters(recurse=False):
                    d = next(grads) + (0.0 if bn else o["weight_decay"]) * p
                    step = d + o["momentum"] * d if o["nesterov"] else d
                    p.sub_(o["lr"] * step)


@pytest.mark.parametrize("name", sorted(TRAIN_OPTIONS))
def test_one_trainer_step_matches_an_independent_step(tmp_path, name):
    from advtrain import config as cfg_mod
    from advtrain.train.loop import Trainer
    from trainer_helpers import tiny_config

    raw = tiny_config(tmp_path, objective={"name": name, **TRAIN_OPTIONS[name]}, optim=OPTIM,
                      data={"test_subset": 0})
    trainer = Trainer(cfg_mod.from_dict(raw), str(tmp_path / "run"), None)
    trainer._set_epoch_hparams(1)
    model, obj = trainer.parts.model.double(), trainer.parts.objective.double()
    natural = getattr(obj, "natural_model", None)
    ref_model, ref_natural = copy.deepcopy(model).train(), copy.deepcopy(natural)
    before = copy.deepcopy(model)
    x, y = next(iter(trainer.parts.loader))
    x = x.double()
    made = []
    perturb = obj.perturb
    obj.perturb = lambda m, xx, yy: made.append(perturb(m, xx, yy)) or made[-1]

    trainer._train_step(x, y, 1)

    (x_adv,) = made
    o = {**OPTIONS.get(name, {}), **TRAIN_OPTIONS[name]}
    if natural is not None:
        ref_natural.train()
    prior = torch.full((10, 10), 0.1)  # epoch 1: uniform prior (SPEC §2.1)
    expected, _ = spec_forward_and_loss(name, o, ref_model, ref_natural, x, x_adv, y, prior)
    modules = [ref_model] + ([ref_natural] if natural is not None else [])
    grads = torch.autograd.grad(expected, [p for m in modules for p in m.parameters()])
    _sgd_reference(modules, grads, OPTIM)

    for ours, ref in [(model, ref_model)] + ([(natural, ref_natural)] if natural is not None else []):
        assert_same_bn(bn_state(ours), bn_state(ref))
        for (k, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
            torch.testing.assert_close(p, q, **TOL, msg=k)
    moved = max((p - q).abs().max().item() for p, q in zip(model.parameters(), before.parameters()))
    assert moved > 1e-4  # the step did something the comparison can see
