"""Validation of :mod:`advtrain.config`: key names, types and value ranges.

Kept apart from the dataclasses so that ``config.py`` reads as the list of knobs. Every check raises
a one-line :class:`~advtrain.errors.InputError` (bad type or range) or
:class:`~advtrain.errors.UnknownNameError` (unknown key or choice, with close matches).
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any

from advtrain.errors import InputError, unknown

#: objective kwargs that belong to the ``attack:`` section (the trainer passes them on)
ATTACK_KEYS = {"eps": "eps", "step_size": "step_size", "steps": "steps", "norm": "norm",
               "attack_init": "init", "bn_mode": "bn_mode"}
#: objective kwargs that must be >= 0
NON_NEGATIVE = ("beta", "alpha", "gamma", "aug_weight", "attack_alpha", "attack_beta",
                "attack_gamma")
POSITIVE = ("prior_T", "loss_T")
#: run.device choices (plus cuda:N); the trainer and evaluator run on CPU or CUDA only
DEVICES = ("auto", "cpu", "cuda")
#: numpy's seed range (torch accepts more); the trainer seeds both with run.seed
MAX_SEED = 2**32 - 1
#: a larger SGD learning rate is a typo, not a recipe (the paper rows use 0.1-0.2)
MAX_LR = 10.0
#: run names are RobustBench-style ids: they become a directory under run.out_dir


# ----------------------------------------------------------------------------- structure / types

def build_section(cls, raw: Any, prefix: str):
    """Instantiate dataclass ``cls`` from mapping ``raw``; unknown keys and bad types refused."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        where = prefix.rstrip(".") or "config"
        raise InputError(f"config section {where!r} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise unknown("config key", f"{prefix}{key}", [prefix + k for k in fields])
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        kwargs[name] = coerce(raw[name], hints[name], prefix + name, f.metadata)
    return cls(**kwargs)


def coerce(value: Any, tp: Any, key: str, meta=None) -> Any:
    """Check ``value`` against annotation ``tp`` (converting int->float, '8/255'->float)."""
    from advtrain.config import parse_eps

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key, meta)
    if meta and meta.get("eps"):
        try:
            return parse_eps(value)
        except InputError as e:
            raise InputError(f"config key {key!r}: {e}") from None
    if dataclasses.is_dataclass(tp):
        return build_section(tp, value, key + ".")
    if origin in (list, typing.List):
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, value, "a list")
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise _type_error(key, value, "a mapping")
        return dict(value)
    return _scalar(value, tp, key)


def _scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _type_error(key, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, value, "an integer")
        return value
    if tp is float:
        return _to_float(value, key)
    if tp is str:
        if not isinstance(value, str):
            raise _type_error(key, value, "a string")
        if "\x00" in value:
            raise InputError(f"config key {key!r} = {value!r} contains a NUL byte; remove it")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")  # programming error


def _to_float(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise _type_error(key, value, "a number")
    out = None
    if isinstance(value, (int, float)):
        out = float(value) if abs(value) < 1e308 else math.inf  # huge ints overflow float()
    elif isinstance(value, str):  # YAML 1.1 reads "5e-4" as a string
        try:
            out = float(value)
        except ValueError:
            pass
    if out is None:
        raise _type_error(key, value, "a number")
    if not math.isfinite(out):
        raise InputError(f"config key {key!r} = {value!r} is not a finite number; give a finite value")
    return out


def _type_error(key: str, value: Any, expected: str) -> InputError:
    return InputError(f"config key {key!r} must be {expected}, got {value!r} ({type(value).__name__})")


# ----------------------------------------------------------------------------- objective kwargs

def check_objective(cfg) -> None:
    """``objective:`` = name + kwargs accepted by that objective's ``defaults()``."""
    from advtrain.config import objective_defaults

    obj = cfg.objective
    if "name" not in obj or not isinstance(obj["name"], str):
        raise InputError("config key 'objective.name' is missing; e.g. objective: {name: gkl_at}")
    for key in obj:
        if key in ATTACK_KEYS:
            raise InputError(f"config key 'objective.{key}' belongs to the attack section; "
                             f"set attack.{ATTACK_KEYS[key]} instead")
    defaults = objective_defaults(obj["name"], cfg.data.dataset)
    allowed = [k for k in defaults if k not in ATTACK_KEYS]
    for key, value in obj.items():
        if key == "name":
            continue
        if key not in defaults:
            raise unknown(f"option of objective {obj['name']!r}:", f"objective.{key}",
                          ["objective." + k for k in allowed])
        obj[key] = _like(value, defaults[key], f"objective.{key}")
        if key in NON_NEGATIVE and isinstance(obj[key], (int, float)) and obj[key] < 0:
            raise InputError(f"config key 'objective.{key}' = {value} must be >= 0")
        if key in POSITIVE and isinstance(obj[key], (int, float)) and obj[key] <= 0:
            raise InputError(f"config key 'objective.{key}' = {value} must be > 0")
    ls = obj.get("label_smoothing")
    if isinstance(ls, (int, float)) and not 0 <= ls < 1:
        raise InputError(f"config key 'objective.label_smoothing' = {ls} must be in [0, 1)")


def _like(value: Any, default: Any, key: str) -> Any:
    """Type-check an objective kwarg against the type of its default."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        return _scalar(value, bool, key)
    if isinstance(default, float):
        return _to_float(value, key)
    if isinstance(default, int):
        return _to_float(value, key) if isinstance(value, float) else _scalar(value, int, key)
    if isinstance(default, str):
        return _scalar(value, str, key)
    return value


# ----------------------------------------------------------------------------- ranges / choices

def check_ranges(cfg) -> None:
    """Refuse out-of-range values and unknown choices before anything is built."""
    E = cfg.optim.epochs
    _at_least("optim.epochs", E, 1)
    if not (cfg.run.device in DEVICES or re.fullmatch(r"cuda:\d+", cfg.run.device)):
        raise InputError(f"config key 'run.device' = {cfg.run.device!r} is not supported; advtrain "
                         "runs on auto, cpu, cuda or cuda:N")
    _at_least("run.seed", cfg.run.seed, 0)
    _at_most("run.seed", cfg.run.seed, MAX_SEED)
    check_run_name(cfg.run.name)
    _at_least("run.checkpoint_every_steps", cfg.run.checkpoint_every_steps, 0)
    _check_data(cfg.data)
    _check_names(cfg)
    a = cfg.attack
    if a.norm is not None:  # None: the objective's default
        _choice("norm", "attack.norm", a.norm, ("Linf", "L2"))
    _choice("attack schedule", "attack.schedule", a.schedule, ("executed", "staged", "fixed"))
    if a.steps is not None:
        _at_least("attack.steps", a.steps, 0)
    o = cfg.optim
    _positive("optim.lr", o.lr)
    _at_most("optim.lr", o.lr, MAX_LR)
    _unit("optim.momentum", o.momentum, closed_right=False)
    _at_least("optim.weight_decay", o.weight_decay, 0)
    _at_most("optim.weight_decay", o.weight_decay, 1)
    _choice("lr schedule", "optim.schedule", o.schedule,
            ("cosine", "cosine_trades", "piecewise", "onecycle"))
    _at_least("optim.warmup_epochs", o.warmup_epochs, 0)
    if o.warmup_epochs > E:
        raise InputError(f"optim.warmup_epochs = {o.warmup_epochs} exceeds optim.epochs = {E}")
    _positive("optim.lr_gamma", o.lr_gamma)
    _at_most("optim.lr_gamma", o.lr_gamma, 1)
    if any(m < 1 for m in o.milestones) or list(o.milestones) != sorted(o.milestones):
        raise InputError(f"optim.milestones {o.milestones} must be increasing epochs >= 1")
    o.lr_table = _check_lr_table(o.lr_table, E)
    if o.nesterov and o.momentum <= 0:
        raise InputError("optim.nesterov needs optim.momentum > 0")
    _at_least("awp.gamma", cfg.awp.gamma, 0)
    _at_least("awp.warmup", cfg.awp.warmup, 0)
    _unit("ema.decay", cfg.ema.decay)
    _at_least("ema.start_epoch", cfg.ema.start_epoch, 1)
    _check_average(cfg.average, E)
    _at_least("eval.test_pgd_steps", cfg.eval.test_pgd_steps, 0)
    _at_least("eval.every", cfg.eval.every, 1)
    _at_least("eval.holdout_every", cfg.eval.holdout_every, 0)
    _at_least("eval.holdout_pgd_steps", cfg.eval.holdout_pgd_steps, 1)
    _choice("nan policy", "nan_policy", cfg.nan_policy, ("stop", "skip"))
    _choice("precision", "precision", cfg.precision, ("fp32", "bf16"))
    from advtrain.metrics import PAPER_ROWS

    if cfg.paper_row is not None and cfg.paper_row not in PAPER_ROWS:
        raise InputError(f"paper_row = {cfg.paper_row} must be one of {min(PAPER_ROWS)}..{max(PAPER_ROWS)} "
                         "(advtrain.metrics.PAPER_ROWS) or null")


def _check_data(d) -> None:
    _choice("augmentation", "data.augment", d.augment, ("basic", "none", "autoaugment"))
    _unit("data.synthetic_fraction", d.synthetic_fraction)
    _at_least("data.batch_size", d.batch_size, 1)
    _at_least("data.workers", d.workers, 0)
    if d.train_subset is not None:
        _at_least("data.train_subset", d.train_subset, 1)
    _at_least("data.test_subset", d.test_subset, 0)
    _at_least("data.holdout", d.holdout, 0)
    from advtrain.data.imagefolder import check_data_section

    check_data_section(d)


def _check_lr_table(table: Any, E: int):
    """``optim.lr_table``: None, a list of E positive lrs, or {epoch >= 1: lr} (keys may be strings,
    as in a dumped config); returns the normalised table (floats, int keys)."""
    fix = "give a list with one lr per epoch or a mapping {epoch: lr}, e.g. {1: 0.02}"
    if table is None:
        return None
    if isinstance(table, (list, tuple)):
        if len(table) != E:
            raise InputError(f"optim.lr_table has {len(table)} entries but optim.epochs = {E}; {fix}")
        return [_table_lr(v, f"optim.lr_table[{i}]") for i, v in enumerate(table)]
    if not isinstance(table, dict):
        raise InputError(f"optim.lr_table = {table!r} is neither a list nor a mapping; {fix}")
    out = {}
    for key, v in table.items():
        epoch = int(key) if isinstance(key, str) and key.strip().isdigit() else key
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise InputError(f"optim.lr_table key {key!r} is not an epoch >= 1 (epochs are 1-indexed); {fix}")
        out[epoch] = _table_lr(v, f"optim.lr_table[{epoch}]")
    return dict(sorted(out.items()))


def _table_lr(value: Any, key: str) -> float:
    lr = _to_float(value, key)
    if not lr > 0 or lr != lr or lr == float("inf"):
        raise InputError(f"config key {key!r} = {value!r} must be a finite lr > 0")
    return lr


def _check_average(av, E: int) -> None:
    _unit("average.tau", av.tau, closed_right=False)
    _at_least("average.start", av.start, 1)
    end = E if av.end is None else av.end
    if not av.start <= end <= E:
        raise InputError(f"average.start/end = {av.start}/{end} must satisfy 1 <= start <= end <= "
                         f"optim.epochs = {E}")


def _check_names(cfg) -> None:
    """Dataset and architecture names against their registries."""
    from advtrain.data import num_classes
    from advtrain.models import model_names

    from advtrain.models.timm_models import check_model_section

    num_classes(cfg.data.dataset, cfg.data.num_classes)
    names = list(model_names())
    arch = cfg.model.arch
    if check_model_section(cfg.model):
        return
    if arch not in names and not re.fullmatch(r"wrn-\d+-\d+", arch):
        raise unknown("architecture", arch, names)


def _choice(kind: str, key: str, value: Any, choices, pattern: str = "") -> None:
    if value in choices or (pattern and isinstance(value, str) and re.fullmatch(pattern, value)):
        return
    raise unknown(f"{kind} ({key})", value, choices)


def _at_least(key: str, value, low) -> None:
    if value < low:
        raise InputError(f"config key {key!r} = {value} must be >= {low}")


def _at_most(key: str, value, high) -> None:
    if value > high:
        raise InputError(f"config key {key!r} = {value} must be <= {high}")


def _positive(key: str, value) -> None:
    if not value > 0:
        raise InputError(f"config key {key!r} = {value} must be > 0")


def _unit(key: str, value, closed_right: bool = True) -> None:
    ok = 0 <= value <= 1 if closed_right else 0 <= value < 1
    if not ok:
        rng = "[0, 1]" if closed_right else "[0, 1)"
        raise InputError(f"config key {key!r} = {value} must be in {rng}")


def check_run_name(name: str, key: str = "run.name") -> str:
    """A run name is one directory below ``run.out_dir``: letters, digits, ``. _ + -``, no leading
    dot (``..``, ``/abs`` and hidden names could escape or hide the run): the rule of
    :func:`advtrain.io.check_model_name` (RobustBench model names), with a run-specific message."""
    from advtrain.io import MODEL_NAME_MAX, MODEL_NAME_RE

    if not isinstance(name, str) or len(name) > MODEL_NAME_MAX or not MODEL_NAME_RE.fullmatch(name):
        raise InputError(f"config key {key!r} = {name!r} is not a valid run name; use 1-{MODEL_NAME_MAX} "
                         "characters from A-Z a-z 0-9 . _ + - not starting with '.' (e.g. "
                         "gkl_at_cifar10); put the run elsewhere with run.out_dir or --run-dir")
    return name


def recorded_test_data(recorded: dict, where: str) -> dict:
    """``{"root", "npz"}`` as recorded in checkpoint ``where`` (``data.root`` / ``data.test_npz`` of
    its training config), checked like a user config: a damaged or hand-edited value gives one line."""
    from advtrain.config import DataConfig

    hints = typing.get_type_hints(DataConfig)
    try:
        return {"root": coerce(recorded.get("root"), hints["root"], "data.root"),
                "npz": coerce(recorded.get("npz"), hints["test_npz"], "data.test_npz")}
    except InputError as e:
        raise InputError(f"{where}: the training config recorded in this checkpoint is invalid ({e}); "
                         "pass the test data with --data-root / --data-npz") from None
