"""Training configuration: typed nested dataclasses, YAML load/dump, dotted overrides.

A config is a YAML file with one mapping per section (``run``, ``data``, ``model``, ``objective``,
``attack``, ``optim``, ``awp``, ``ema``, ``average``, ``eval``, ``log``, ``guard``; ``teacher`` for distillation, see
:mod:`advtrain.train.teacher`) plus a few top-level switches.
The command line may override any value with ``section.key=value`` (the value is parsed as YAML)::

    advtrain train configs/gkl_at_cifar10.yaml objective.beta=6 optim.epochs=2

:func:`load` / :func:`from_dict` are the one validator of user settings: unknown keys (with close
matches), wrong types and out-of-range values raise :class:`advtrain.errors.InputError` /
:class:`UnknownNameError` with one line naming the key and the fix (the checks live in
:mod:`advtrain.config.check`). They return ONE frozen, fully resolved :class:`Config`: every entry the
YAML leaves out is filled from the objective's recommended recipe (its ``Options`` dataclass: options,
``ATTACK``, ``OPTIM``) or the trainer-wide default, so the trainer, objectives and attacks take the
values as they are. ``resolve(config)`` is its plain dict, stored in every checkpoint and shown in
``RUN_DIR/config.yaml``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

from attacks import TRAINING_ATTACKS
from attacks.options import option_names

from advtrain.config.check import check_lr_table, check_objective, check_ranges
from advtrain.config.types import EPS, build_section  # noqa: F401  (EPS re-exported)
from advtrain.utils import parse_eps  # noqa: F401  (re-exported)
from advtrain.errors import InputError, unknown

from advtrain.config.attack import ATTACK_COMMON, AttackConfig, resolve_attack


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"  # run directory name under out_dir
    seed: int = 0  # initialisation, data order, augmentation and attack starts
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    out_dir: str = "runs"  # folder of the run directories
    deterministic: bool = True  # deterministic algorithms: bitwise resume (one thread count, CPU kind)
    checkpoint_every_steps: int = 0  # 0: only per-epoch checkpoints
    progress: bool = True  # progress bar per epoch, drawn only when stderr is a terminal


@dataclass(frozen=True)
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
    # ImageFolder training augmentation (advtrain.data.folder_augment; timm's order and semantics)
    interpolation: str = "bilinear"  # bilinear | bicubic: RandomResizedCrop's resize (training)
    randaugment: int = 0  # torchvision RandAugment ops per image (0: off)
    randaugment_magnitude: int = 9  # of torchvision's 31 bins (0..30)
    # timm's own RandAugment from its config string (e.g. rand-m9-mstd0.5-inc1; null: off), built by
    # timm.data.auto_augment.rand_augment_transform with the hparams of timm's create_transform
    timm_randaugment: Optional[str] = None
    color_jitter: float = 0.0  # ColorJitter(b=c=s=value); off while either RandAugment is on (timm)
    reprob: float = 0.0  # random erasing probability (timm mode 'pixel', one box)
    mixup: float = 0.0  # Mixup alpha (timm Mixup, mode 'batch'; soft targets)
    cutmix: float = 0.0  # CutMix alpha
    mixup_prob: float = 1.0  # probability that a batch is mixed
    mixup_switch_prob: float = 0.5  # CutMix instead of Mixup when both alphas are on
    # ImageFolder datasets: list files of 'relative/path label' lines under data.root instead of the
    # train/ and val/ class folders (ImageNet-LT's ImageNet_LT_train.txt / ImageNet_LT_test.txt)
    train_list: Optional[str] = None
    val_list: Optional[str] = None  # the test list (ImageNet_LT_test.txt), read as data.train_list


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "wrn-34-10"  # or timm:<name> (advtrain.models.timm_models)
    channels_last: bool = False
    weights: Optional[str] = None  # timm models: local initial weights (tensors only)
    new_head: bool = False  # fine-tuning: load model.weights but the classifier head (fresh, any class count)
    drop_path: float = 0.0  # timm models: stochastic depth rate (timm's drop_path_rate)
    # timm ConvNeXt / ViT (16x16 patches): revisiting-at's ConvStem in place of the patchify stem
    # (advtrain.models.conv_stem; revisiting-at model.not_original 1)
    conv_stem: bool = False
    # timm models: the in-model ImageNet mean/std normaliser (false: mean 0, std 1, the network sees
    # [0, 1] pixels, revisiting-at's model.add_normalization 0)
    normalize: bool = True


@dataclass(frozen=True)
class ObjectiveConfig:
    """Training objective: ``name`` (a key of :data:`advtrain.objectives.OBJECTIVES`) and ``options``,
    an instance of its ``Options`` dataclass (every option resolved: written, implied or the
    objective's default for the dataset), written flat in the YAML (``objective: {name: trades,
    beta: 6}``) and read as ``cfg.objective.options.beta`` (or ``cfg.objective.beta``)."""

    name: str = "gkl_at"
    options: Any = None  # OBJECTIVES[name].Options(...), resolved by from_dict

    def __getattr__(self, key: str):
        """``cfg.objective.beta``: the objective's options read through (typed, resolved)."""
        options = self.__dict__.get("options")
        if key.startswith("__") or options is None or key not in option_names(type(options)):
            raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")
        return getattr(options, key)


@dataclass(frozen=True)
class OptimConfig:
    """Trainer-wide defaults: DKL's optimiser (SPEC 5.1); an objective whose paper trains otherwise
    names its own in ``Options.OPTIM``, used for every entry a config leaves out."""

    name: str = "sgd"  # sgd | adamw | adam (torch.optim.SGD / AdamW / Adam: L2 weight decay in the gradient)
    lr: float = 0.2
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only (timm's "sgd" is Nesterov SGD)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw and adam only
    eps: float = 1e-8  # adamw and adam only
    weight_decay: float = 5e-4
    wd_exclude_bn: bool = False  # no weight decay on BatchNorm parameters
    # parameters without weight decay: none | timm (timm's rule: ndim <= 1, names ending in .bias and
    # the model's no_weight_decay() names) | bn_bias_names (revisiting-at's ConvNeXt/ResNet rule:
    # names containing "bn" or ".bias")
    wd_exclude: str = "none"
    clip_grad_norm: Optional[float] = None  # clip the global gradient L2 norm before each step
    layer_decay: Optional[float] = None  # timm models: layer-wise lr decay (lr x decay^(depth from the head))
    schedule: str = "cosine"  # cosine | cosine_trades | piecewise | onecycle | step_timm | cosine_timm | cosine_interp
    warmup_epochs: int = 0
    milestones: List[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    # per-update schedules (step_timm, cosine_timm, cosine_interp; advtrain.config.schedules)
    warmup_lr: float = 0.0  # lr at the first update of the linear warm-up
    decay_epochs: int = 30  # step_timm: lr * lr_gamma ** (t // decay_epochs)
    min_lr: float = 0.0  # cosine_timm / cosine_interp: the cosine's floor
    sched_on_updates: bool = True  # step_timm / cosine_timm: timm's clock in updates (else epochs)
    epochs: int = 200
    # per-epoch lr table: a list (one lr per epoch 1..E, replaces the schedule) or a mapping
    # {epoch: lr} for the epochs that differ from the schedule (LBGAT: {1: 0.02})
    lr_table: Any = None
    # micro-batches per optimizer step (gradient accumulation, advtrain.train.step): the loss of
    # each is divided by the group size, so one step sees data.batch_size * accum_steps images
    accum_steps: int = 1


@dataclass(frozen=True)
class AWPConfig:
    enabled: bool = False
    gamma: float = 0.005
    warmup: int = 10  # AWP from epoch `warmup` on (1-indexed)


@dataclass(frozen=True)
class EMAConfig:
    enabled: bool = False
    decay: float = 0.9996
    start_epoch: int = 1  # first epoch with EMA updates (copy of the weights at its first step)
    dm_warmup: bool = False  # DM recipe: decay 0 for 2.5% of training, then min(tau, (1+d)/(10+d))


@dataclass(frozen=True)
class AverageConfig:
    tau: float = 0.9
    start: int = 1
    end: Optional[int] = None  # left out: the last epoch


@dataclass(frozen=True)
class EvalConfig:
    test_pgd_steps: int = 10
    every: int = 1  # evaluate the test subset every N epochs (and always at the last)
    # data.holdout > 0: PGD-CW on the held-out images every N epochs (and at the last) -> best.pt
    holdout_every: int = 1  # 0: no held-out scoring
    holdout_pgd_steps: int = 40  # DM recipe: PGD-40, step eps/4


@dataclass(frozen=True)
class GuardConfig:
    """Catastrophic-overfitting guard (:mod:`advtrain.train.guard`): ``policy`` off | warn | stop |
    rollback; a collapse is a drop of test PGD accuracy by more than ``drop`` (absolute, below the best
    good epoch's; Wong et al.'s 0.2) while FGSM accuracy falls by at most ``fgsm_tolerance``."""

    policy: str = "off"
    drop: float = 0.2
    fgsm_tolerance: float = 0.05


@dataclass(frozen=True)
class LogConfig:
    tensorboard: bool = False  # RUN_DIR/tb/ event files (pip install tensorboard)


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    awp: AWPConfig = field(default_factory=AWPConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    average: AverageConfig = field(default_factory=AverageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    teacher: Optional[Dict[str, Any]] = None  # distillation objectives only (advtrain.train.teacher)
    nan_policy: str = "stop"  # stop | skip
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA only; fp16 with a gradient scaler)
    tf32: bool = True  # TF32 for fp32 matmuls / convolutions on CUDA (Ampere and newer)
    compile: bool = False
    sync_bn: bool = False
    dist_bn: str = "none"  # none | reduce: all-reduce-mean of BN running statistics after each epoch (DDP)
    paper_row: Optional[int] = None  # row of advtrain.config.paper_rows.PAPER_ROWS (SPEC section 7)
    notes: str = ""


# ----------------------------------------------------------------------------- load / dump

def from_dict(raw: Optional[Dict[str, Any]]) -> Config:
    """Validate a plain (YAML) mapping and resolve it into one frozen :class:`Config`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError("a config must be a mapping of sections (run:, data:, optim:, ...)")
    raw = _deepcopy(raw)
    # sections whose keys depend on a name (objective.name, attack.name) are resolved apart
    written_objective, written_attack = raw.pop("objective", None), raw.pop("attack", None)
    given = build_section(Config, raw, "")  # types and key names of everything else as written
    objective = _objective(written_objective, given.data)
    recipe = type(objective.options)
    written = {k: v for k, v in (raw.get("optim") or {}).items() if v is not None}
    raw["optim"] = {**recipe.OPTIM, **written}
    cfg = dataclasses.replace(build_section(Config, raw, ""), objective=objective,
                              attack=resolve_attack(written_attack, recipe.ATTACK))
    check_ranges(cfg)
    average = cfg.average
    if average.end is None:
        average = dataclasses.replace(average, end=cfg.optim.epochs)
    cfg = dataclasses.replace(
        cfg, average=average,
        optim=dataclasses.replace(cfg.optim, lr_table=check_lr_table(cfg.optim.lr_table, cfg.optim.epochs)))
    from advtrain.config.check import check_teacher_section

    return dataclasses.replace(cfg, teacher=check_teacher_section(cfg))


def _objective(obj: Any, data: DataConfig) -> ObjectiveConfig:
    """The resolved ``objective:`` section (its options checked against their rules); the objective's
    defaults are computed here, once per config."""
    from advtrain.objectives import OBJECTIVES

    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise InputError(f"config key 'objective' must be a mapping, got {type(obj).__name__}; e.g. "
                         "objective: {name: gkl_at}")
    name = obj.get("name") if obj else ObjectiveConfig.name  # a section without a name is refused
    if not isinstance(name, str):
        raise InputError("config key 'objective.name' is missing; e.g. objective: {name: gkl_at}")
    if name not in OBJECTIVES:
        raise unknown("objective", name, OBJECTIVES)
    options_cls = OBJECTIVES[name].Options
    implied = {"two_view": True} if data.augment == "autoaugment" else {}  # [basic; AutoAug]
    rest = {k: v for k, v in obj.items() if k != "name"}
    attack_keys = set(ATTACK_COMMON).union(*(option_names(c.Options) for c in TRAINING_ATTACKS.values()))
    options = check_objective(options_cls, name, rest, data.dataset, attack_keys, implied)
    if implied and getattr(options, "two_view", True) is False:
        raise InputError("data.augment: autoaugment gives [basic; AutoAug] batches but objective.two_view "
                         "is false; set objective.two_view: true (a run's config.yaml from an earlier "
                         "release may record false for a run that trained two-view: edit it so)")
    return ObjectiveConfig(name=name, options=options)


def load(path: Union[str, os.PathLike], overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``key=value`` overrides and validate."""
    raw = read_yaml(path)
    return from_dict(apply_overrides(raw, overrides))


def read_yaml(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "not found"
        raise InputError(f"config file {str(path)!r} {what}; give the path of a YAML file (see configs/)")
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

#: longest integer a config may spell out (the largest setting, a seed, has 10 digits)
MAX_INT_DIGITS = 100


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

    def construct_yaml_int(self, node):
        """Python refuses to read an integer of more than 4,300 digits (a ValueError, not a YAML
        error); no setting needs more than a few, so a long one is refused here with its line."""
        digits = len(str(node.value))
        if digits > MAX_INT_DIGITS:
            raise StrictYAMLError(f"line {node.start_mark.line + 1}: an integer of {digits} digits; "
                                  "give a smaller value")
        return super().construct_yaml_int(node)

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


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


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
            raise InputError(f"override {_clip(item)} is not key=value; write e.g. optim.epochs=2")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise InputError(f"override {_clip(item)} has an empty key; write e.g. optim.epochs=2")
        try:
            value = yaml.load(text, Loader=StrictLoader) if text.strip() else None
        except StrictYAMLError as e:
            raise InputError(f"override {_clip(item)}: {e}") from None
        except yaml.YAMLError:
            value = text
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise InputError(f"override {_clip(item)}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return raw


def _clip(item: str) -> str:
    """An override as written, cut to one short line for messages."""
    return repr(item if len(item) <= 60 else item[:57] + "...")


def to_dict(cfg: Config) -> Dict[str, Any]:
    """Plain nested dict of a (resolved) config; the attack's options are written flat in its section
    (``attack: {name, eps, ..., norm, init, bn_mode}``), as a config is written."""
    out = dataclasses.asdict(cfg)
    for section in ("objective", "attack"):  # name + the named class's options, one flat mapping
        d = out[section]
        out[section] = {**{k: v for k, v in d.items() if k != "options"}, **(d["options"] or {})}
    return out


#: the plain dict of a config is its resolved form: :func:`from_dict` resolved everything
resolve = to_dict


def dump(cfg: Union[Config, Dict[str, Any]]) -> str:
    """YAML text of a config (a :class:`Config` is resolved first)."""
    data = resolve(cfg) if isinstance(cfg, Config) else cfg
    return yaml.dump(_plain(data), Dumper=_PlainDumper, sort_keys=False, default_flow_style=False)


class _PlainDumper(yaml.SafeDumper):
    """Never writes anchors/aliases (a shared list would otherwise dump as ``&id001``, which
    :class:`StrictLoader` refuses when the run is resumed)."""

    def ignore_aliases(self, data):
        return True


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
    "Config", "RunConfig", "DataConfig", "ModelConfig", "ObjectiveConfig", "AttackConfig", "OptimConfig",
    "AWPConfig", "EMAConfig", "AverageConfig", "EvalConfig", "GuardConfig", "parse_eps", "load", "from_dict",
    "apply_overrides", "resolve", "dump", "to_dict", "read_yaml", "build_objective", "resolve_attack",
]


from advtrain.config.build import build_objective  # noqa: E402  (re-exported; it imports check)
