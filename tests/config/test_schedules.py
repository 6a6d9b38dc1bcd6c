"""Schedules (SPEC 3, 5.1, 6): LR tables, OneCycle vs torch, PGD budget at boundaries."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from advtrain.errors import InputError, UnknownNameError
from advtrain.config.schedules import attack_budget, lr_at, momentum_at, staged_thresholds

EPS = 8 / 255


def optim(**kw):
    base = dict(lr=0.2, momentum=0.9, schedule="cosine", warmup_epochs=0, milestones=[],
                lr_gamma=0.1, epochs=200)
    base.update(kw)
    return SimpleNamespace(**base)


def test_cosine_head_values_from_spec():
    cfg = optim()
    assert lr_at(1, cfg) == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi / 201)))
    assert lr_at(1, cfg) == pytest.approx(0.19999, abs=1e-5)
    assert lr_at(100, cfg) == pytest.approx(0.1008, abs=1e-4)
    assert lr_at(200, cfg) == pytest.approx(1.2e-5, rel=0.05)
    assert all(lr_at(e, cfg) > 0 for e in range(1, 201))
    assert all(lr_at(e + 1, cfg) < lr_at(e, cfg) for e in range(1, 200))


def test_cosine_warmup_first_release():
    cfg = optim(warmup_epochs=10)
    assert [lr_at(e, cfg) for e in (1, 5, 9)] == pytest.approx([0.02, 0.1, 0.18])
    assert lr_at(10, cfg) == pytest.approx(0.2)  # restarts at full lr, denominator 191
    assert lr_at(11, cfg) == pytest.approx(0.1 * (1 + math.cos(math.pi / 191)))


def test_cosine_trades_full_lr_at_epoch_one():
    cfg = optim(schedule="cosine_trades")
    assert lr_at(1, cfg) == pytest.approx(0.2)
    assert lr_at(101, cfg) == pytest.approx(0.1)


def test_piecewise_milestones_inclusive():
    cfg = optim(schedule="piecewise", lr=0.1, milestones=[75, 90, 100], epochs=110)
    assert lr_at(74, cfg) == pytest.approx(0.1)
    assert lr_at(75, cfg) == pytest.approx(0.01)
    assert lr_at(90, cfg) == pytest.approx(0.001)
    assert lr_at(110, cfg) == pytest.approx(0.0001)


def test_onecycle_where_torch_divides_by_zero():
    cfg = optim(schedule="onecycle", epochs=40)  # warm-up phase of length 0 in torch
    lrs = [lr_at(e, cfg) for e in range(1, 41)]
    assert lrs[0] == pytest.approx(0.2 / 25) and max(lrs) <= 0.2
    assert all(math.isfinite(v) for v in lrs) and lrs[-1] == pytest.approx(0.2 / 25 / 1e4)


@pytest.mark.parametrize("E", [1, 3, 10, 80, 400])
def test_onecycle_matches_torch_per_epoch(E):
    cfg = optim(schedule="onecycle", epochs=E)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, pct_start=0.025, total_steps=E)
    for e in range(1, E + 1):
        group = opt.param_groups[0]
        assert lr_at(e, cfg) == pytest.approx(group["lr"], rel=1e-12, abs=1e-15)
        assert momentum_at(e, cfg) == pytest.approx(group["momentum"], rel=1e-12)
        opt.step()
        if e < E:
            sched.step()


def test_momentum_constant_for_other_schedules():
    assert momentum_at(7, optim()) == 0.9


def test_epoch_out_of_range_refused():
    with pytest.raises(InputError):
        lr_at(0, optim())
    with pytest.raises(InputError):
        attack_budget(201, 200, EPS)


def test_executed_table_e200():
    for e in (1, 50, 51, 100, 101, 150, 151, 200):
        eps_t, eta, k = attack_budget(e, 200, EPS, "executed")
        assert eps_t == pytest.approx(EPS * e / 200)
        assert (eta, k) == (pytest.approx(eps_t / 2), 5)
    assert attack_budget(100, 200, EPS)[0] == pytest.approx(4 / 255)
    assert attack_budget(200, 200, EPS)[0] == pytest.approx(EPS)


def test_staged_table_e200_boundaries():
    expect = {1: (2, 1.0), 50: (2, 1.0), 51: (3, 2 / 3), 100: (3, 2 / 3), 101: (4, 0.5),
              150: (4, 0.5), 151: (5, 0.5), 200: (5, 0.5)}
    for e, (k, frac) in expect.items():
        eps_t, eta, steps = attack_budget(e, 200, EPS, "staged")
        assert steps == k and eta == pytest.approx(frac * eps_t), e


@pytest.mark.parametrize("E", [29, 57, 58, 113, 114, 115, 116, 201, 203, 1, 2, 7])
def test_staged_every_epoch_defined_where_reference_crashes(E):
    t1, t2, t3 = staged_thresholds(E)
    assert (t1, t2, t3) == (50 * E // 200, 100 * E // 200, 150 * E // 200)
    steps = [attack_budget(e, E, EPS, "staged")[2] for e in range(1, E + 1)]
    assert steps == sorted(steps)  # budget never decreases
    assert steps[-1] == 5  # last epoch always gets the full budget (the reference crashed here)
    assert steps.count(2) == t1
    ex = [attack_budget(e, E, EPS, "executed") for e in (1, E)]
    assert ex[-1][0] == pytest.approx(EPS) and ex[0][2] == 5


def test_fixed_and_ramp_switch():
    assert attack_budget(3, 10, EPS, "fixed", steps=10, step_size=2 / 255) == (EPS, 2 / 255, 10)
    eps_t, eta, k = attack_budget(3, 10, EPS, "fixed", steps=7, step_size=0.01, ramp=True)
    assert (eps_t, eta, k) == (pytest.approx(EPS * 0.3), 0.01, 7)
    assert attack_budget(3, 10, EPS, "executed", ramp=False)[:2] == (EPS, EPS / 2)


def test_unknown_schedule():
    with pytest.raises(UnknownNameError, match="did you mean 'staged'"):
        attack_budget(1, 10, EPS, "stagd")
