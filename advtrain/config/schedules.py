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

Per-update schedules (the lr changes at every optimizer update ``k`` = 0, 1, ..., ``E*U - 1`` with
``U`` updates per epoch; :func:`lr_at_update`, which gives every schedule above its epoch's value):

- ``step_timm``: timm's ``StepLRScheduler`` as ``create_scheduler_v2`` builds it (``warmup_prefix``
  False): ``t < W: warmup_lr + t*(lr - warmup_lr)/W``, else ``lr * lr_gamma**(t // decay_epochs)``;
- ``cosine_timm``: timm's ``CosineLRScheduler`` (one cycle, ``warmup_prefix`` False): the same
  warm-up, else ``min_lr + (lr - min_lr)/2 * (1 + cos(pi*t/E))``;
  with ``sched_on_updates`` (timm's ``sched_on_updates``, ARES) ``t`` counts updates and W, E,
  ``decay_epochs`` are multiplied by U; without it ``t`` is the 0-indexed epoch (timm stepped per epoch);
- ``cosine_interp`` (revisiting-at, ``main.py get_cosine_lr`` + ``np.interp``): the epoch-boundary
  values ``g(e) = warmup_lr + e*(lr - warmup_lr)/W`` for ``e <= W``, else
  ``min_lr + (lr - min_lr)/2 * (1 + cos(pi*(e - W)/(E - W)))``, interpolated linearly within each
  epoch: update ``j`` of epoch ``e`` (0-indexed) uses ``g(e) + j/U * (g(e+1) - g(e))``.
- ``cyclic`` (Wong et al. ``train_fgsm.py``, N-FGSM ``train.py``, SPEC 13.0/13.1):
  ``torch.optim.lr_scheduler.CyclicLR(base_lr=0, max_lr=lr, step_size_up=step_size_down=E*U/2)``
  stepped after every batch, with its default momentum cycling (``cycle_momentum=True``:
  0.9 -> 0.8 -> 0.9 against the lr, whatever ``optim.momentum`` says; :func:`momentum_at_update`):
  at update k, ``s = 1 - |k/(E*U/2) - 1|``, ``lr = lr_max*s``, ``momentum = 0.9 - 0.1*s``;
- ``cyclic_interp`` (GradAlign ``train.py`` / ``utils.get_lr_schedule``, SPEC 13.3):
  ``lr = interp(t, [0, (2E)//5, E], [0, lr_max, 0])`` at ``t = e + (j+1)/U`` (update ``j`` of the
  0-indexed epoch ``e``); momentum fixed.

PGD budget (``attack.schedule``, SPEC 3), with the radius ramp ``eps_t = eps*e/E`` (or ``eps``):

- ``executed`` (what the reference runs): K = 5, eta = eps_t/2 every epoch;
- ``staged`` (the reference's if/elif intent, integer thresholds ``(50E)//200`` ...):
  K=2 eta=eps_t | K=3 eta=2eps_t/3 | K=4 eta=eps_t/2 | K=5 eta=eps_t/2;
- ``fixed``: the configured ``steps`` and ``step_size``;
- ``ares_step_ramp`` (ARES 2.0, ``adversarial_training.py:406``: ``attack_step * min(epoch, 5) / 5``
  with a 0-indexed epoch): the configured ``steps``, step ``step_size * min(e - 1, 5) / 5`` in
  (1-indexed) epoch ``e`` -- step 0 in the first epoch (the start point only), the full step from
  epoch 6 on.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

from advtrain.errors import InputError, unknown

LR_SCHEDULES = ("cosine", "cosine_trades", "piecewise", "onecycle", "step_timm", "cosine_timm",
                "cosine_interp", "cyclic", "cyclic_interp")
#: schedules whose lr changes at every optimizer update (:func:`lr_at_update`)
PER_UPDATE = ("step_timm", "cosine_timm", "cosine_interp", "cyclic", "cyclic_interp")
#: torch CyclicLR's default momentum range (cycle_momentum=True), as Wong / N-FGSM run it
CYCLIC_MOMENTUM = (0.8, 0.9)
ATTACK_SCHEDULES = ("executed", "staged", "fixed", "ares_step_ramp")
#: epochs of ARES' linear attack-step ramp (hard-coded in its adversarial_training.py:406)
ARES_STEP_RAMP = 5
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
    if name in PER_UPDATE:  # the lr of the epoch's first update
        return lr_at_update((epoch - 1), 1, cfg)
    raise unknown("lr schedule", name, LR_SCHEDULES)


def lr_at_update(k: int, updates_per_epoch: int, cfg) -> float:
    """Learning rate of optimizer update ``k`` (0-based over the run) with ``updates_per_epoch``
    updates per epoch: the per-update schedules (module docstring), else the epoch's :func:`lr_at`."""
    U = updates_per_epoch
    if U < 1 or k < 0:
        raise InputError(f"update {k} with {U} updates per epoch: need k >= 0 and U >= 1")
    epoch0, j = divmod(k, U)  # 0-indexed epoch, update within it
    name = cfg.schedule
    table = getattr(cfg, "lr_table", None)
    if name not in PER_UPDATE or (isinstance(table, dict) and epoch0 + 1 in table) or \
            isinstance(table, (list, tuple)):
        return lr_at(epoch0 + 1, cfg)
    _check_epoch(epoch0 + 1, cfg.epochs)
    lr, W, E = cfg.lr, cfg.warmup_epochs, cfg.epochs
    if name == "cyclic":
        return lr * _cyclic_scale(k, E * U)
    if name == "cyclic_interp":
        t, peak = epoch0 + (j + 1) / U, (E * 2) // 5
        if t <= peak:
            return lr * t / peak if peak > 0 else lr
        return lr * max(0.0, (E - t) / (E - peak))
    if name == "cosine_interp":
        g0, g1 = _interp_node(epoch0, cfg), _interp_node(epoch0 + 1, cfg)
        return g0 + (j / U) * (g1 - g0)
    t, scale = (k, U) if cfg.sched_on_updates else (epoch0, 1)
    if t < W * scale:
        return cfg.warmup_lr + t * (lr - cfg.warmup_lr) / (W * scale)
    if name == "step_timm":
        return lr * cfg.lr_gamma ** (t // (cfg.decay_epochs * scale))
    t_initial = E * scale  # cosine_timm, one cycle: never past its end while training
    return cfg.min_lr + 0.5 * (lr - cfg.min_lr) * (1.0 + math.cos(math.pi * t / t_initial))


def _cyclic_scale(k: int, total: int) -> float:
    """torch CyclicLR's triangular scale at step ``k`` with step_size_up = step_size_down = total/2."""
    x = k / total - math.floor(k / total)  # position within the cycle
    return x / 0.5 if x <= 0.5 else (x - 1) / (0.5 - 1)


def momentum_at_update(k: int, updates_per_epoch: int, cfg) -> float:
    """SGD momentum of update ``k``: cycled against the lr by ``cyclic`` (torch CyclicLR's
    cycle_momentum, 0.9 -> 0.8 -> 0.9), else the epoch's :func:`momentum_at`."""
    epoch0 = k // updates_per_epoch
    table = getattr(cfg, "lr_table", None)
    if cfg.schedule != "cyclic" or isinstance(table, (list, tuple)) or \
            (isinstance(table, dict) and epoch0 + 1 in table):
        return momentum_at(epoch0 + 1, cfg)
    low, high = CYCLIC_MOMENTUM
    return high - (high - low) * _cyclic_scale(k, cfg.epochs * updates_per_epoch)


def _interp_node(e: int, cfg) -> float:
    """revisiting-at's ``get_cosine_lr(e)`` for the epoch boundary ``e`` = 0..E."""
    lr, W, E = cfg.lr, cfg.warmup_epochs, cfg.epochs
    if e <= W and W > 0:
        return cfg.warmup_lr + e * (lr - cfg.warmup_lr) / W
    return cfg.min_lr + 0.5 * (lr - cfg.min_lr) * (1.0 + math.cos(math.pi * (e - W) / (E - W)))


def momentum_at(epoch: int, cfg) -> float:
    """SGD momentum of ``epoch``: cycled by ``onecycle`` (as torch does), else ``cfg.momentum``."""
    _check_epoch(epoch, cfg.epochs)
    if cfg.schedule == "onecycle":
        return _onecycle(epoch - 1, cfg.epochs, cfg.lr)[1]
    if cfg.schedule == "cyclic":  # the epoch's first update (per update: momentum_at_update)
        low, high = CYCLIC_MOMENTUM
        return high - (high - low) * (2 * (epoch - 1) / cfg.epochs if epoch - 1 <= cfg.epochs / 2
                                      else 2 - 2 * (epoch - 1) / cfg.epochs)
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
    """The radius ramp when a config leaves ``attack.ramp`` out: on for executed/staged, off for
    fixed and ares_step_ramp (whose ramp is of the step)."""
    return schedule not in ("fixed", "ares_step_ramp")


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
    if schedule == "ares_step_ramp":
        return AttackBudget(eps_t, step_size * min(epoch - 1, ARES_STEP_RAMP) / ARES_STEP_RAMP, steps)
    t1, t2, t3 = staged_thresholds(epochs)
    if epoch <= t1:
        return AttackBudget(eps_t, eps_t, 2)
    if epoch <= t2:
        return AttackBudget(eps_t, 2 * eps_t / 3, 3)
    if epoch <= t3:
        return AttackBudget(eps_t, eps_t / 2, 4)
    return AttackBudget(eps_t, eps_t / 2, 5)

