"""Training configuration: typed nested dataclasses, YAML load/dump, dotted overrides.

A config is a YAML file with one mapping per section (``run``, ``data``, ``model``, ``objective``,
``attack``, ``optim``, ``awp``, ``ema``, ``average``, ``eval``; ``teacher`` for distillation, see
:mod:`advtrain.teacher`) plus a few top-level switches.
The command line may override any value with ``section.key=value`` (the value is parsed as YAML)::

    advtrain train configs/gkl_at_cifar10.yaml objective.beta=6 optim.epochs=2

Everything is validated before training starts: unknown keys (with close matches), wrong types and
out-of-range values raise :class:`advtrain.errors.InputError` / :class:`UnknownNameError` with one
line naming the key and the fix. ``resolve(config)`` gives the fully resolved plain dict that is
stored in every checkpoint and in ``RUN_DIR/config.yaml``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

from advtrain.errors import InputError, unknown

Number = Union[int, float]
#: marker in field metadata: the value is an eps-like float that also accepts "8/255"
EPS = {"eps": True}


def parse_eps(value: Union[str, float, int]) -> float:
    """``"8/255"`` / ``"0.0314"`` / ``0.0314`` -> float in [0, 1]; anything else -> InputError."""
    if isinstance(value, bool):
        raise InputError(f"invalid eps {value!r}; give a number like 0.0314 or a fraction like 8/255")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                out = float(num) / float(den)
            else:
                out = float(text)
        except (ValueError, ZeroDivisionError):
            raise InputError(
                f"invalid eps {value!r}; give a number like 0.0314 or a fraction like 8/255"
            ) from None
    else:
        raise InputError(f"invalid eps {value!r}; give a number like 0.0314 or a fraction like 8/255")
    if not math.isfinite(out) or out < 0 or out > 1:
        raise InputError(f"eps {value!r} = {out:g} is outside [0, 1]; images live in [0, 1] (e.g. 8/255)")
    return out


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    out_dir: str = "runs"
    deterministic: bool = True
    checkpoint_every_steps: int = 0  # 0: only per-epoch checkpoints
    progress: bool = True  # tqdm bar per epoch


@dataclass
class DataConfig:
    dataset: str = "cifar10"
    root: Optional[str] = None
    train_npz: Optional[str] = None
    test_npz: Optional[str] = None
    synthetic_npz: List[str] = field(default_factory=list)
    synthetic_fraction: float = 0.7
    augment: str = "basic"  # basic | none | autoaugment
    batch_size: int = 128
    workers: int = 0
    drop_last: bool = False
    train_subset: Optional[int] = None
    test_subset: int = 1000  # fixed random (seed 0) test subset for the per-epoch clean / PGD accuracy
    holdout: int = 0


@dataclass
class ModelConfig:
    arch: str = "wrn-34-10"
    channels_last: bool = False


@dataclass
class AttackConfig:
    """Training attack. ``schedule``: executed (reference: K=5, eta=eps_t/2), staged, fixed."""

    eps: float = field(default=8 / 255, metadata=EPS)
    norm: str = "Linf"
    schedule: str = "executed"
    ramp: Optional[bool] = None  # eps_t = eps*e/E; None -> on for executed/staged, off for fixed
    steps: int = 10  # used by the fixed schedule
    step_size: float = field(default=2 / 255, metadata=EPS)  # used by the fixed schedule
    init: Optional[str] = None  # None -> the objective's default
    bn_mode: Optional[str] = None  # None -> the objective's default


@dataclass
class OptimConfig:
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    wd_exclude_bn: bool = False
    schedule: str = "cosine"  # cosine | cosine_trades | piecewise | onecycle
    warmup_epochs: int = 0
    milestones: List[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    epochs: int = 200


@dataclass
class AWPConfig:
    enabled: bool = False
    gamma: float = 0.005
    warmup: int = 10  # AWP from epoch `warmup` on (1-indexed)


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.9996
    start_epoch: int = 1  # first epoch with EMA updates (copy of the weights at its first step)
    dm_warmup: bool = False  # DM recipe: decay 0 for 2.5% of training, then min(tau, (1+d)/(10+d))


@dataclass
class AverageConfig:
    tau: float = 0.9
    start: int = 1
    end: Optional[int] = None  # None -> last epoch


@dataclass
class EvalConfig:
    test_pgd_steps: int = 10
    every: int = 1  # evaluate the test subset every N epochs (and always at the last)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: Dict[str, Any] = field(default_factory=lambda: {"name": "gkl_at"})
    attack: AttackConfig = field(default_factory=AttackConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    awp: AWPConfig = field(default_factory=AWPConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    average: AverageConfig = field(default_factory=AverageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    teacher: Optional[Dict[str, Any]] = None  # distillation objectives only (advtrain.teacher)
    nan_policy: str = "stop"  # stop | skip
    precision: str = "fp32"  # fp32 | bf16 (GPU only)
    compile: bool = False
    sync_bn: bool = False
    paper_row: Optional[int] = None  # row of advtrain.metrics.PAPER_ROWS (SPEC section 7)
    notes: str = ""


from advtrain.config_check import (  # noqa: E402
    ATTACK_KEYS, build_section, check_objective, check_ranges)


# ----------------------------------------------------------------------------- load / dump

def from_dict(raw: Optional[Dict[str, Any]]) -> Config:
    """Build and validate a :class:`Config` from a plain (YAML) mapping."""
    raw = dict(raw or {})
    if not isinstance(raw, dict):
        raise InputError("a config must be a mapping of sections (run:, data:, optim:, ...)")
    cfg = build_section(Config, raw, "")
    check_objective(cfg)
    check_ranges(cfg)
    from advtrain.teacher import check_section

    check_section(cfg)
    return cfg


def load(path: Union[str, os.PathLike], overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``key=value`` overrides and validate."""
    raw = read_yaml(path)
    return from_dict(apply_overrides(raw, overrides))


def read_yaml(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise InputError(f"config file {str(path)!r} not found; give the path of a YAML file (see configs/)")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            where = f" line {line + 1}" if line is not None else ""
            raise InputError(f"config {str(path)!r}{where} is not valid YAML; fix the syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"config {str(path)!r} must be a mapping of sections (run:, data:, ...)")
    return raw


def apply_overrides(raw: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply dotted ``section.key=value`` overrides (values parsed as YAML) to a raw mapping."""
    raw = _deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override {item!r} is not key=value; write e.g. optim.epochs=2")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise InputError(f"override {item!r} has an empty key; write e.g. optim.epochs=2")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise InputError(f"override {item!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return raw


def to_dict(cfg: Config) -> Dict[str, Any]:
    """Plain nested dict of a config (as written, without objective defaults)."""
    return dataclasses.asdict(cfg)


def resolve(cfg: Config) -> Dict[str, Any]:
    """Fully resolved plain dict: every default filled in, incl. the objective's own defaults."""
    out = to_dict(cfg)
    obj = dict(cfg.objective)
    defaults = objective_defaults(obj["name"], cfg.data.dataset)
    if defaults is not None:
        merged = {"name": obj["name"]}
        merged.update({k: v for k, v in defaults.items() if k not in ATTACK_KEYS})
        merged.update({k: v for k, v in obj.items() if k != "name"})
        out["objective"] = merged
    att = out["attack"]
    if att["ramp"] is None:
        att["ramp"] = att["schedule"] != "fixed"
    if out["average"]["end"] is None:
        out["average"]["end"] = cfg.optim.epochs
    return out


def dump(cfg: Union[Config, Dict[str, Any]]) -> str:
    """YAML text of a config (a :class:`Config` is resolved first)."""
    data = resolve(cfg) if isinstance(cfg, Config) else cfg
    return yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=False)


def objective_defaults(name: str, dataset: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The objective's ``defaults()`` dict, or None when the objectives package is absent."""
    try:
        from advtrain.objectives import OBJECTIVES
    except ImportError:  # pragma: no cover - objectives not installed yet
        return None
    if name not in OBJECTIVES:
        raise unknown("objective", name, OBJECTIVES)
    return dict(OBJECTIVES[name].defaults(dataset))


def _deepcopy(x):
    if isinstance(x, dict):
        return {k: _deepcopy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deepcopy(v) for v in x]
    return x


def _plain(x):
    """Tuples -> lists, so YAML dumps plain data."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


__all__ = [
    "Config", "RunConfig", "DataConfig", "ModelConfig", "AttackConfig", "OptimConfig", "AWPConfig",
    "EMAConfig", "AverageConfig", "EvalConfig", "parse_eps", "load", "from_dict", "apply_overrides",
    "resolve", "dump", "to_dict", "read_yaml", "objective_defaults",
]
