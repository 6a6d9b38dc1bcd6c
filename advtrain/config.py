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
    # ImageFolder datasets (imagefolder, imagenet; advtrain.data.imagefolder): class count, pixels
    num_classes: Optional[int] = None
    image_size: Optional[int] = None  # None -> 224 for ImageFolder datasets


@dataclass
class ModelConfig:
    arch: str = "wrn-34-10"  # or timm:<name> (advtrain.models.timm_models)
    channels_last: bool = False
    weights: Optional[str] = None  # timm models: local initial weights (tensors only)


@dataclass
class AttackConfig:
    """Training attack. ``schedule``: executed (reference: K=5, eta=eps_t/2), staged, fixed.

    ``None`` means "the objective's default" (``OBJECTIVES[name].defaults(dataset)``, the one source
    of attack defaults); :func:`resolve` fills every such entry, so the resolved ``config.yaml`` shows
    the attack the run actually used.
    """

    eps: Optional[float] = field(default=None, metadata=EPS)  # None -> objective default (8/255)
    norm: Optional[str] = None  # None -> objective default (Linf)
    schedule: str = "executed"
    ramp: Optional[bool] = None  # eps_t = eps*e/E; None -> on for executed/staged, off for fixed
    steps: Optional[int] = None  # used by the fixed schedule; None -> objective default (10)
    step_size: Optional[float] = field(default=None, metadata=EPS)  # fixed schedule; None -> objective
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
    # per-epoch lr table: a list (one lr per epoch 1..E, replaces the schedule) or a mapping
    # {epoch: lr} for the epochs that differ from the schedule (LBGAT: {1: 0.02})
    lr_table: Any = None


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
    # data.holdout > 0: PGD-CW on the held-out images every N epochs (and at the last) -> best.pt
    holdout_every: int = 1  # 0: no held-out scoring
    holdout_pgd_steps: int = 40  # DM recipe: PGD-40, step eps/4


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
    with open(path, "rb") as f:
        text = _decode(f.read(), str(path))
    try:
        raw = yaml.load(text, Loader=StrictLoader)
    except StrictYAMLError as e:
        raise InputError(f"config {str(path)!r}: {e}") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise InputError(f"config {str(path)!r}{where} is not valid YAML; fix the syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"config {str(path)!r} must be a mapping of sections (run:, data:, ...)")
    return raw


# ----------------------------------------------------------------------------- strict YAML

class StrictYAMLError(ValueError):
    """A config that is valid YAML but refused: a duplicate key, an anchor or an alias."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML keeps the last one silently) and anchors /
    aliases (nested aliases expand exponentially: a 1 KB "billion laughs" file takes gigabytes)."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent) or anchor is not None:
            kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise StrictYAMLError(f"line {event.start_mark.line + 1}: YAML {kind}{anchor} is not "
                                  "allowed in configs; write the value out in full")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: Dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: SafeLoader refuses it below
                    continue
                if first is not None:
                    lines = f"lines {first} and {line}" if first != line else f"line {line}"
                    raise StrictYAMLError(f"duplicate key {key!r} on {lines}; keep one of them")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _decode(data: bytes, path: str) -> str:
    """Config bytes -> text; anything but UTF-8 (UTF-16 from an editor, Latin-1) named and refused."""
    fix = "save the file as UTF-8"
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(bom):
            raise InputError(f"config {path!r} is {name} encoded; {fix}")
    if b"\x00" in data[:4096]:
        raise InputError(f"config {path!r} contains NUL bytes (UTF-16 without a byte-order mark, or "
                         f"not a text file); {fix}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"config {path!r} is not UTF-8 (byte 0x{data[e.start]:02x} on line {line}, "
                         f"e.g. Latin-1); {fix}") from None


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
            value = yaml.load(text, Loader=StrictLoader) if text.strip() else None
        except StrictYAMLError as e:
            raise InputError(f"override {item!r}: {e}") from None
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
    merged = {"name": obj["name"]}
    merged.update({k: v for k, v in defaults.items() if k not in ATTACK_KEYS})
    merged.update({k: v for k, v in obj.items() if k != "name"})
    out["objective"] = merged
    out["attack"] = attack_settings(cfg)
    if out["average"]["end"] is None:
        out["average"]["end"] = cfg.optim.epochs
    return out


def attack_settings(cfg: Config) -> Dict[str, Any]:
    """The ``attack:`` section with every unset entry taken from the objective's defaults."""
    att = dataclasses.asdict(cfg.attack)
    defaults = objective_defaults(cfg.objective["name"], cfg.data.dataset)
    for obj_key, att_key in ATTACK_KEYS.items():
        if att[att_key] is None and obj_key in defaults:
            att[att_key] = defaults[obj_key]
    if att["ramp"] is None:
        att["ramp"] = att["schedule"] != "fixed"
    return att


def dump(cfg: Union[Config, Dict[str, Any]]) -> str:
    """YAML text of a config (a :class:`Config` is resolved first)."""
    data = resolve(cfg) if isinstance(cfg, Config) else cfg
    return yaml.dump(_plain(data), Dumper=_PlainDumper, sort_keys=False, default_flow_style=False)


class _PlainDumper(yaml.SafeDumper):
    """Never writes anchors/aliases (a shared list would otherwise dump as ``&id001``, which
    :class:`StrictLoader` refuses when the run is resumed)."""

    def ignore_aliases(self, data):
        return True


def objective_defaults(name: str, dataset: Optional[str] = None) -> Dict[str, Any]:
    """The objective's ``defaults()`` dict (unknown ``name``: UnknownNameError)."""
    from advtrain.objectives import OBJECTIVES

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
    "resolve", "dump", "to_dict", "read_yaml", "objective_defaults", "attack_settings",
]
