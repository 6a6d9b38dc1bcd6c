"""Learning-rate, momentum and PGD-budget schedules as pure functions of the (1-indexed) epoch.

Epochs are 1..E and every value is set once per epoch, before that epoch is trained (SPEC 5.1).

LR schedules (``optim.schedule``):

- ``cosine`` (DKL HEAD, SPEC 5.1): ``lr*e/W`` for ``e < W``, else
  ``lr * 1/2 * (1 + cos(pi*(e - W) / (E - W + 1)))`` (never 0; W = ``warmup_epochs``);
- ``cosine_trades`` (TRADES baseline in the DKL repo, SPEC 4.3): ``lr * 1/2 * (1 + cos(pi*(e-1)/E))``;
- ``piecewise``: ``lr * gamma^(#milestones <= e)`` (TRADES: x0.1 from epoch 75 on);
- ``optim.lr_table`` overrides any of these: a list gives every epoch's lr, a mapping
  ``{epoch: lr}`` the epochs that differ (LBGAT, SPEC 4.4: ``{1: 0.02}`` with ``piecewise``
  milestones 76, 91: 0.02, 0.1 x 74, 0.01 x 15, 0.001 x 10);
- ``onecycle`` (DM recipe, SPEC 6): ``torch.optim.lr_scheduler.OneCycleLR(max_lr=lr,
  pct_start=0.025, total_steps=E)`` stepped once per epoch, in closed form, including its
  momentum cycling 0.95 -> 0.85 -> 0.95 (``momentum_at``).

PGD budget (``attack.schedule``, SPEC 3), with the radius ramp ``eps_t = eps*e/E`` (or ``eps``):

- ``executed`` (what the reference runs): K = 5, eta = eps_t/2 every epoch;
- ``staged`` (the reference's if/elif intent, integer thresholds ``(50E)//200`` ...):
  K=2 eta=eps_t | K=3 eta=2eps_t/3 | K=4 eta=eps_t/2 | K=5 eta=eps_t/2;
- ``fixed``: the configured ``steps`` and ``step_size``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

from advtrain.errors import InputError, unknown

LR_SCHEDULES = ("cosine", "cosine_trades", "piecewise", "onecycle")
ATTACK_SCHEDULES = ("executed", "staged", "fixed")
#: OneCycleLR defaults used by the DM recipe
ONECYCLE = dict(pct_start=0.025, div_factor=25.0, final_div_factor=1e4,
                base_momentum=0.85, max_momentum=0.95)


def _check_epoch(epoch: int, epochs: int) -> None:
    if epochs < 1 or not 1 <= epoch <= epochs:
        raise InputError(f"epoch {epoch} outside 1..{epochs}; epochs are 1-indexed")


def lr_at(epoch: int, cfg) -> float:
    """Learning rate of (1-indexed) ``epoch`` for an ``OptimConfig``-like ``cfg``."""
    E, lr = cfg.epochs, cfg.lr
    _check_epoch(epoch, E)
    table = getattr(cfg, "lr_table", None)
    if isinstance(table, (list, tuple)):
        return float(table[epoch - 1])
    if isinstance(table, dict) and epoch in table:
        return float(table[epoch])
    name = cfg.schedule
    if name == "cosine":
        W = cfg.warmup_epochs
        if epoch < W:
            return lr * epoch / W
        return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - W) / (E - W + 1)))
    if name == "cosine_trades":
        return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / E))
    if name == "piecewise":
        return lr * cfg.lr_gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    if name == "onecycle":
        return _onecycle(epoch - 1, E, lr)[0]
    raise unknown("lr schedule", name, LR_SCHEDULES)


def momentum_at(epoch: int, cfg) -> float:
    """SGD momentum of ``epoch``: cycled by ``onecycle`` (as torch does), else ``cfg.momentum``."""
    _check_epoch(epoch, cfg.epochs)
    if cfg.schedule == "onecycle":
        return _onecycle(epoch - 1, cfg.epochs, cfg.lr)[1]
    return cfg.momentum


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _onecycle(step: int, total: int, max_lr: float) -> Tuple[float, float]:
    """(lr, momentum) of torch's OneCycleLR (two phases, cosine) after ``step`` scheduler steps."""
    p = ONECYCLE
    initial = max_lr / p["div_factor"]
    final = initial / p["final_div_factor"]
    phases = [  # (end_step, lr start, lr end, momentum start, momentum end)
        (float(p["pct_start"] * total) - 1, initial, max_lr, p["max_momentum"], p["base_momentum"]),
        (float(total) - 1, max_lr, final, p["base_momentum"], p["max_momentum"]),
    ]
    start_step = 0.0
    for i, (end_step, lr0, lr1, m0, m1) in enumerate(phases):
        if step <= end_step or i == len(phases) - 1:
            span = end_step - start_step
            pct = (step - start_step) / span if span else 0.0  # torch divides by zero (E=40)
            return _cos_anneal(lr0, lr1, pct), _cos_anneal(m0, m1, pct)
        start_step = end_step
    raise AssertionError("unreachable")  # pragma: no cover


def staged_thresholds(epochs: int) -> Tuple[int, int, int]:
    """Integer thresholds (50E//200, 100E//200, 150E//200) of the staged PGD budget."""
    return (50 * epochs) // 200, (100 * epochs) // 200, (150 * epochs) // 200


def default_ramp(schedule: str) -> bool:
    """The radius ramp when a config leaves ``attack.ramp`` out: on for executed/staged, off for fixed."""
    return schedule != "fixed"


class AttackBudget(NamedTuple):
    """The training attack of one epoch: radius ``eps``, ``step_size`` and number of ``steps``; handed
    to whichever attack runs through ``attack.set_budget(*budget)``."""

    eps: float
    step_size: float
    steps: int


def attack_budget(epoch: int, epochs: int, eps: float, schedule: str = "executed", *,
                  steps: int = 10, step_size: float = 2 / 255,
                  ramp: Optional[bool] = None) -> AttackBudget:
    """``AttackBudget(eps_t, step_size, steps)`` of the training attack in (1-indexed) ``epoch`` of ``epochs``.

    ``ramp`` (default: :func:`default_ramp`) gives ``eps_t = eps*epoch/epochs``.
    """
    _check_epoch(epoch, epochs)
    if schedule not in ATTACK_SCHEDULES:
        raise unknown("attack schedule", schedule, ATTACK_SCHEDULES)
    if ramp is None:
        ramp = default_ramp(schedule)
    eps_t = eps * epoch / epochs if ramp else eps
    if schedule == "executed":
        return AttackBudget(eps_t, eps_t / 2, 5)
    if schedule == "fixed":
        return AttackBudget(eps_t, step_size, steps)
    t1, t2, t3 = staged_thresholds(epochs)
    if epoch <= t1:
        return AttackBudget(eps_t, eps_t, 2)
    if epoch <= t2:
        return AttackBudget(eps_t, 2 * eps_t / 3, 3)
    if epoch <= t3:
        return AttackBudget(eps_t, eps_t / 2, 4)
    return AttackBudget(eps_t, eps_t / 2, 5)

