"""The training-attack registry of the attack library: every registered class declares its options
(types, defaults, rules) and takes its budget through ``set_budget``, checked there; ``none``."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from attacks import TRAINING_ATTACKS, AttackError, NoAttack, build_training_attack, training_attack
from attacks.options import check_setting, setting


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 3, 4, 4, generator=g) * 0.8 + 0.1, torch.arange(6) % 3


@pytest.mark.parametrize("name", sorted(TRAINING_ATTACKS))
def test_every_training_attack_declares_its_options_and_takes_a_checked_budget(name):
    cls = TRAINING_ATTACKS[name]
    assert dataclasses.is_dataclass(cls.Options) and cls.Options.__dataclass_params__.frozen
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    assert "norm" in fields  # the threat model the run's per-epoch test measures
    options = cls.Options()
    for f in fields.values():  # every default obeys its own rule
        check_setting(cls.Options, f.name, getattr(options, f.name))
    attack = build_training_attack(name, options, loss="ce", eps=4 / 255, step_size=1 / 255, steps=2)
    assert math.isclose(attack.eps, 4 / 255, rel_tol=1e-12)
    before = dict(vars(attack))
    for bad, match in (((-0.1, 0.01, 1), "eps"), ((0.1, -0.01, 1), "step_size"),
                       ((0.1, 0.01, -1), "steps"), ((math.inf, 0.01, 1), "eps"),
                       ((0.1, 0.01, 2.5), "steps")):
        with pytest.raises(AttackError, match=match):
            attack.set_budget(*bad)
    assert vars(attack) == before  # a refused budget changes nothing
    x, y = _batch()
    x_adv = attack(_net(), x, y)
    # inside the attack's declared radius: eps, or N-FGSM's k eps + step by design (SPEC 13.2)
    assert x_adv.shape == x.shape and float((x_adv - x).abs().max()) <= attack.radius() + 1e-6


def test_unknown_training_attack_names_the_choices():
    with pytest.raises(AttackError, match=r"unknown training attack 'pdg'; did you mean 'pgd' or 'apgd'\? "
                                          r"choices: apgd, fgsm, fgsm_rs, n_fgsm, none, pgd, pgd_best") as info:
        training_attack("pdg")
    assert "\n" not in str(info.value)


def test_pgd_budget_goes_through_set_budget_to_every_step():
    """set_budget(eps, step_size, steps) is what the next call runs. Two-class linear model: the CE
    gradient in x is p_1 (w_1 - w_0) for y = 0 and (p_1 - 1)(w_1 - w_0) for y = 1, so every sign step
    goes the same way and K steps of size a from x (init none) inside a ball of radius e > a K move
    each coordinate by exactly a K in the direction sign(w_1 - w_0) (y = 0) or its opposite (y = 1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    attack = build_training_attack("pgd", TRAINING_ATTACKS["pgd"].Options(init="none"), loss="ce",
                                   eps=8 / 255, step_size=2 / 255, steps=10)
    attack.set_budget(0.2, 0.01, 3)
    x, _ = _batch()
    y = torch.arange(6) % 2
    w = model[1].weight.detach().double()
    direction = torch.sign(w[1] - w[0]).view(1, -1) * (1 - 2 * y.double()).view(-1, 1)
    clear = ((w[1] - w[0]).abs() > 1e-4).view(1, -1).expand_as(direction)
    expected = x.double().reshape(6, -1) + 0.03 * direction
    got = attack(model, x, y).double().reshape(6, -1)
    assert clear.any() and torch.allclose(got[clear], expected[clear], atol=1e-6)


def test_none_returns_the_input_and_allows_eps_zero():
    attack = NoAttack()
    assert attack.eps == 0.0
    attack.set_budget(0.0, 0.0, 0)
    x, y = _batch()
    model = _net().train()
    x_adv = attack(model, x, y)
    assert torch.equal(x_adv, x) and x_adv is not x and model.training
    attack.set_budget(8 / 255, 2 / 255, 10)  # any budget the schedule hands it: still x
    assert torch.equal(attack(model, x, y), x)
    with pytest.raises(AttackError, match="eps"):
        NoAttack(eps=-1.0)
    with pytest.raises(AttackError, match=r"\[0,1\]"):
        attack(model, x * 10, y)


def test_the_rule_reader():
    @dataclasses.dataclass(frozen=True)
    class Opts:
        restarts: int = setting(1, integer=True, min=1)
        frac: float = setting(0.5, gt=0, lt=1)
        kind: str = setting("a", choices=("a", "b"))

    assert check_setting(Opts, "restarts", 3) == 3
    for name, value, match in (("restarts", 0, ">= 1"), ("restarts", 1.5, "an integer"),
                               ("restarts", True, "an integer"), ("frac", 1.0, "< 1"),
                               ("frac", 0, "> 0"), ("frac", "x", "a finite number"),
                               ("kind", "c", "choices: a, b"), ("nope", 1, "unknown option")):
        with pytest.raises(AttackError, match=match):
            check_setting(Opts, name, value, f"attack.{name}")
