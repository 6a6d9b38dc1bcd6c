"""Validation of :mod:`advtrain.config`: value ranges and choices, objective options against their
field rules, the attack settings (types and key names: :mod:`advtrain.config.types`).

Kept apart from the dataclasses so that ``config.py`` reads as the list of knobs. Every check raises
a one-line :class:`~advtrain.errors.InputError` (bad type or range) or
:class:`~advtrain.errors.UnknownNameError` (unknown key or choice, with close matches).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Optional

from advtrain.config.types import build_section, coerce, short, to_float
from advtrain.errors import InputError, unknown
from attacks import NORMS

#: numpy's seed range (torch accepts more); the trainer seeds both with run.seed
MAX_SEED = 2**32 - 1
#: a larger SGD learning rate is a typo, not a recipe (the paper rows use 0.1-0.2)
MAX_LR = 10.0


# ----------------------------------------------------------------------------- objective / attack

def check_objective(options_cls, name: str, given: Dict[str, Any], dataset: Optional[str],
                    attack_keys=(), implied: Optional[Dict[str, Any]] = None):
    """The resolved options (an ``options_cls`` instance) of objective ``name``: ``given`` (its
    ``objective:`` keys; None keeps a default) over ``implied`` (defaults another setting implies,
    e.g. two_view under AutoAugment) over the objective's defaults for ``dataset``."""
    defaults = options_cls.defaults(dataset)
    for key in given:
        if key in attack_keys and key not in defaults:
            raise InputError(f"config key 'objective.{key}' belongs to the attack section; "
                             f"set attack.{key} instead")
        if key not in defaults:
            raise unknown(f"option of objective {name!r}:", f"objective.{key}",
                          ["objective." + k for k in defaults])
    set_ = {k: v for k, v in given.items() if v is not None}
    raw = {**defaults, **{k: v for k, v in (implied or {}).items() if k in defaults}, **set_}
    options = build_section(options_cls, raw, "objective.")
    for f in dataclasses.fields(options_cls):
        _check_rule(f"objective.{f.name}", getattr(options, f.name), f.metadata)
    return options


def _check_rule(key: str, value: Any, rule) -> None:
    """An option against the rule of its field (see :func:`advtrain.objectives.base.opt`)."""
    if "choices" in rule:
        _choice(key.split(".")[-1], key, value, rule["choices"])
    if rule.get("arch"):
        _check_arch(key, value)
    if "min" in rule:
        _at_least(key, value, rule["min"])
    if "max" in rule:
        _at_most(key, value, rule["max"])
    if "gt" in rule and not value > rule["gt"]:
        raise InputError(f"config key {key!r} = {short(value)} must be > {rule['gt']}")
    if "lt" in rule and not value < rule["lt"]:
        raise InputError(f"config key {key!r} = {short(value)} must be < {rule['lt']}")


def check_attack(a) -> None:
    """Ranges and choices of the ``attack:`` section (types and keys: :func:`advtrain.config.resolve_attack`):
    the schedule, the budget, and each of the attack's options against the rule its class declares
    (a choice named here with its config key; any other rule by the attack library's own reader,
    :func:`attacks.options.check_setting`)."""
    from attacks import TRAINING_ATTACKS
    from attacks.options import check_setting, option_choices, option_names

    from advtrain.config.schedules import ATTACK_SCHEDULES

    from advtrain.utils import check_eps

    _choice("attack schedule", "attack.schedule", a.schedule, ATTACK_SCHEDULES)
    _at_least("attack.steps", a.steps, 0)
    for f in dataclasses.fields(a.options):
        key, value = f"attack.{f.name}", getattr(a.options, f.name)
        if "choices" in f.metadata:
            able = [n for n, c in TRAINING_ATTACKS.items()
                    if value in (option_choices(c.Options, f.name) or ())]
            if value not in f.metadata["choices"] and able:  # another attack's choice (e.g. norm L1)
                raise InputError(f"attack {a.name!r} does not take {key} {value!r} (its choices: "
                                 f"{', '.join(f.metadata['choices'])}); the training attacks that do: "
                                 f"{', '.join(sorted(able))}; set attack.name to one of them")
            _choice(f"attack {f.name}", key, value, f.metadata["choices"])
            continue
        try:  # the attack library's check (it raises attacks.AttackError, a ValueError)
            check_setting(type(a.options), f.name, value, f"config key {key!r}")
        except ValueError as e:  # attacks.AttackError
            raise InputError(str(e)) from None
    for key in ("eps", "step_size"):  # parsed without a norm (config.types.coerce); its range here
        value = getattr(a, key)
        if value is not None and "norm" in option_names(type(a.options)):
            check_eps(value, a.options.norm, f"config key 'attack.{key}' = {short(value)} "
                                              f"(attack.norm {a.options.norm})")


# ----------------------------------------------------------------------------- ranges / choices

def check_ranges(cfg) -> None:
    """Refuse out-of-range values and unknown choices before anything is built (``optim.lr_table``
    is checked by :func:`check_lr_table`, which also normalises it)."""
    E = cfg.optim.epochs
    _at_least("optim.epochs", E, 1)
    from advtrain.utils import parse_device  # the device rule's owner (no GPU needed)

    parse_device(cfg.run.device, "config key 'run.device' =")
    _at_least("run.seed", cfg.run.seed, 0)
    _at_most("run.seed", cfg.run.seed, MAX_SEED)
    check_run_name(cfg.run.name)
    _at_least("run.checkpoint_every_steps", cfg.run.checkpoint_every_steps, 0)
    _check_data(cfg.data)
    _check_names(cfg)
    o = cfg.optim
    _check_lr("optim.lr", o.lr)
    _unit("optim.momentum", o.momentum, closed_right=False)
    _at_least("optim.weight_decay", o.weight_decay, 0)
    _at_most("optim.weight_decay", o.weight_decay, 1)
    from advtrain.config.schedules import LR_SCHEDULES

    _choice("lr schedule", "optim.schedule", o.schedule, LR_SCHEDULES)
    _at_least("optim.warmup_epochs", o.warmup_epochs, 0)
    if o.warmup_epochs > E:
        raise InputError(f"optim.warmup_epochs = {o.warmup_epochs} exceeds optim.epochs = {E}")
    _positive("optim.lr_gamma", o.lr_gamma)
    _at_most("optim.lr_gamma", o.lr_gamma, 1)
    if any(m < 1 for m in o.milestones) or len(set(o.milestones)) != len(o.milestones) or \
            list(o.milestones) != sorted(o.milestones):
        raise InputError(f"optim.milestones {o.milestones} must be increasing epochs >= 1 (each once)")
    _at_least("optim.accum_steps", o.accum_steps, 1)
    if o.nesterov and o.momentum <= 0:
        raise InputError("optim.nesterov needs optim.momentum > 0")
    _check_optimizer(o)
    _check_soft_targets(cfg)
    if o.layer_decay is not None and not str(cfg.model.arch).startswith("timm:"):
        raise InputError("optim.layer_decay needs a timm:<name> architecture (its layer groups); remove it")
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
    _check_guard(cfg)
    from advtrain.config.paper_rows import PAPER_ROWS

    _choice("precision", "precision", cfg.precision, TRAIN_PRECISIONS)
    if cfg.precision == "fp16" and cfg.awp.enabled:
        raise InputError("precision fp16 with awp: the AWP proxy step has no gradient scaler; use "
                         "precision bf16 (no scaler needed) or fp32")
    _choice("BN statistics reduction", "dist_bn", cfg.dist_bn, DIST_BN)

    if cfg.paper_row is not None and cfg.paper_row not in PAPER_ROWS:
        raise InputError(f"paper_row = {cfg.paper_row} must be one of {min(PAPER_ROWS)}..{max(PAPER_ROWS)} "
                         "(advtrain.config.paper_rows.PAPER_ROWS) or null")


#: catastrophic-overfitting guard policies (advtrain.train.guard acts on them)
GUARD_POLICIES = ("off", "warn", "stop", "rollback")


def _check_guard(cfg) -> None:
    """``guard:`` needs the per-epoch test every epoch and owns best.pt (as data.holdout does)."""
    g = cfg.guard
    _choice("guard policy", "guard.policy", g.policy, GUARD_POLICIES)
    _unit("guard.drop", g.drop)
    _unit("guard.fgsm_tolerance", g.fgsm_tolerance)
    if g.policy == "off":
        return
    if cfg.data.test_subset == 0 or cfg.eval.every != 1:
        raise InputError(f"guard.policy {g.policy} compares PGD and FGSM test accuracy every epoch; "
                         f"set data.test_subset > 0 and eval.every: 1 (now {cfg.data.test_subset} and "
                         f"{cfg.eval.every}), or guard.policy: off")
    if cfg.eval.test_pgd_steps < 1:
        raise InputError(f"guard.policy {g.policy} needs the per-epoch PGD test; set "
                         "eval.test_pgd_steps >= 1 (e.g. 10), or guard.policy: off")
    from attacks import FGSM
    from attacks.options import option_choices

    fgsm_norms = option_choices(FGSM.Options, "norm")
    if cfg.attack.norm not in fgsm_norms:
        raise InputError(f"guard.policy {g.policy} measures FGSM accuracy, which runs "
                         f"{' and '.join(fgsm_norms)} only (attack.norm is {cfg.attack.norm}); set "
                         "guard.policy: off")
    if cfg.data.holdout > 0 and cfg.eval.holdout_every:
        raise InputError("guard.policy and data.holdout both choose best.pt; set guard.policy: off or "
                         "data.holdout: 0")


#: objectives whose losses take mixup/cutmix soft targets (y only through F.cross_entropy, which
#: reads a B×K float target as class probabilities: soft-target CE, as ARES / revisiting-at)
SOFT_TARGETS = ("ce", "pgd_at", "trades")


def _check_soft_targets(cfg) -> None:
    """Mixup/CutMix give B×K soft targets: only objectives and attack losses that read them."""
    if not (cfg.data.mixup > 0 or cfg.data.cutmix > 0):
        return
    name = cfg.objective.name
    if name not in SOFT_TARGETS:
        raise InputError(f"data.mixup/cutmix give soft targets, which objective {name!r} does not take; "
                         f"use objective {' or '.join(SOFT_TARGETS)}, or set data.mixup: 0 and data.cutmix: 0")
    loss = getattr(cfg.objective.options, "attack_loss", "ce")
    if loss not in ("ce", "kl"):
        raise InputError(f"data.mixup/cutmix: the attack loss {loss!r} needs hard labels; use "
                         "objective.attack_loss: ce (soft-target CE)")
    if cfg.attack.name not in SOFT_TARGET_ATTACKS:
        raise InputError(f"data.mixup/cutmix: training attack {cfg.attack.name!r} needs hard labels; use "
                         f"attack.name {' or '.join(SOFT_TARGET_ATTACKS)}")


#: training attacks whose losses read soft targets (attacks.base.SOFT_LOSSES)
SOFT_TARGET_ATTACKS = ("pgd", "pgd_best", "apgd", "none")
#: optimisers of ``optim.name`` and the keys that only one of them reads
OPTIMIZERS = {"sgd": ("momentum", "nesterov"), "adamw": ("betas", "eps"), "adam": ("betas", "eps")}
#: ``optim.wd_exclude``: which parameters get no weight decay (advtrain.train.setup.make_optimizer)
WD_EXCLUDE = ("none", "timm", "1d", "bn_bias_names")
#: training precisions (fp16 and bf16: CUDA autocast; fp16 with a gradient scaler)
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")
#: ``dist_bn``: none, or reduce (all-reduce-mean of BN running statistics after every epoch, ARES)
DIST_BN = ("none", "reduce")


def _check_optimizer(o) -> None:
    """``optim.name`` and the keys of the optimiser, the weight-decay exclusion, gradient
    clipping and the per-update schedule keys."""
    _choice("optimizer", "optim.name", o.name, OPTIMIZERS)
    if o.name != "sgd":
        if o.nesterov:
            raise InputError(f"optim.nesterov applies to optim.name: sgd only; remove it for {o.name}")
        if o.schedule == "onecycle":
            raise InputError("optim.schedule onecycle cycles SGD momentum; use it with optim.name: sgd")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise InputError(f"optim.betas = {list(o.betas)} must be two numbers in [0, 1), e.g. [0.9, 0.999]")
    _positive("optim.eps", o.eps)
    _choice("weight-decay exclusion", "optim.wd_exclude", o.wd_exclude, WD_EXCLUDE)
    if o.wd_exclude != "none" and o.wd_exclude_bn:
        raise InputError("optim.wd_exclude and optim.wd_exclude_bn both choose parameters without "
                         "weight decay; keep one of them (wd_exclude: timm covers BatchNorm too)")
    if o.clip_grad_norm is not None:
        _positive("optim.clip_grad_norm", o.clip_grad_norm)
    if o.layer_decay is not None and not 0 < o.layer_decay <= 1:
        raise InputError(f"config key 'optim.layer_decay' = {o.layer_decay} must be in (0, 1], e.g. 0.75")
    _at_least("optim.warmup_lr", o.warmup_lr, 0)
    if o.warmup_lr > 0:
        _check_lr("optim.warmup_lr", o.warmup_lr)
    _at_least("optim.min_lr", o.min_lr, 0)
    if o.min_lr > o.lr:
        raise InputError(f"optim.min_lr = {o.min_lr} exceeds optim.lr = {o.lr}")
    _at_least("optim.decay_epochs", o.decay_epochs, 1)
    if o.schedule == "cosine_interp" and o.warmup_epochs >= o.epochs:
        raise InputError(f"optim.schedule cosine_interp needs optim.warmup_epochs < optim.epochs = "
                         f"{o.epochs}")


def _check_data(d) -> None:
    from advtrain.data.datasets import AUGMENTATIONS

    check_synthetic(d.synthetic_npz)
    _choice("augmentation", "data.augment", d.augment, AUGMENTATIONS)
    _unit("data.synthetic_fraction", d.synthetic_fraction)
    _at_least("data.batch_size", d.batch_size, 1)
    _at_least("data.workers", d.workers, 0)
    if d.train_subset is not None:
        _at_least("data.train_subset", d.train_subset, 1)
    _at_least("data.test_subset", d.test_subset, 0)
    _at_least("data.holdout", d.holdout, 0)
    from advtrain.data.imagefolder import check_data_section

    check_data_section(d)


def check_lr_table(table: Any, E: int):
    """``optim.lr_table``: None, a list of E lrs, or {epoch: lr} for epochs 1..E (keys may be strings,
    as in a dumped config; ``1`` and ``"1"`` together are refused); every lr obeys the rules of
    ``optim.lr``. Returns the normalised table (floats, int keys, sorted)."""
    fix = "give a list with one lr per epoch or a mapping {epoch: lr}, e.g. {1: 0.02}"
    if table is None:
        return None
    if isinstance(table, (list, tuple)):
        if len(table) != E:
            raise InputError(f"optim.lr_table has {len(table)} entries but optim.epochs = {E}; {fix}")
        return [_check_lr(f"optim.lr_table[{i}]", to_float(v, f"optim.lr_table[{i}]"))
                for i, v in enumerate(table)]
    if not isinstance(table, dict):
        raise InputError(f"optim.lr_table = {short(table)} is neither a list nor a mapping; {fix}")
    out, given = {}, {}
    for key, v in table.items():
        epoch = int(key) if isinstance(key, str) and key.strip().isdigit() else key
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= E:
            raise InputError(f"optim.lr_table key {short(key)} is not an epoch >= 1 and <= "
                             f"optim.epochs = {E} (epochs are 1-indexed); {fix}")
        if epoch in given:
            raise InputError(f"optim.lr_table keys {given[epoch]!r} and {key!r} name the same epoch "
                             f"{epoch}; keep one of them")
        given[epoch] = key
        name = f"optim.lr_table[{epoch}]"
        out[epoch] = _check_lr(name, to_float(v, name))
    return dict(sorted(out.items()))


def _check_lr(key: str, lr: float) -> float:
    """The rule of every learning rate (``optim.lr`` and each ``optim.lr_table`` entry)."""
    if not lr > 0:
        raise InputError(f"config key {key!r} = {short(lr)} must be > 0 (a finite lr > 0, at most {MAX_LR})")
    _at_most(key, lr, MAX_LR)
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
    from advtrain.models.timm_models import check_model_section

    num_classes(cfg.data.dataset, cfg.data.num_classes)
    if not check_model_section(cfg.model):  # timm:<name> archs are checked against timm
        _check_arch("model.arch", cfg.model.arch)


def _check_arch(key: str, arch: str) -> None:
    """``arch`` against the registry's names and parsed patterns (:func:`advtrain.models.get_spec`,
    their one owner), the error naming the config key."""
    from advtrain.models.registry import get_spec
    from advtrain.models.timm_models import is_timm, timm_name

    if is_timm(arch):
        timm_name(arch)
        return
    get_spec(arch, kind="architecture" if key == "model.arch" else f"architecture ({key})")


def check_synthetic(paths) -> None:
    """``data.synthetic_npz``: each file once (a repeated file would silently double its weight)."""
    seen: Dict[str, int] = {}
    for i, path in enumerate(paths):
        if path in seen:
            raise InputError(f"data.synthetic_npz[{seen[path]}] and [{i}] are both {path!r}; list each "
                             "file once")
        seen[path] = i


def _choice(kind: str, key: str, value: Any, choices, pattern: str = "") -> None:
    if value in choices or (pattern and isinstance(value, str) and re.fullmatch(pattern, value)):
        return
    raise unknown(f"{kind} ({key})", value, choices)


def _at_least(key: str, value, low) -> None:
    if value < low:
        raise InputError(f"config key {key!r} = {short(value)} must be >= {low}")


def _at_most(key: str, value, high) -> None:
    if value > high:
        raise InputError(f"config key {key!r} = {short(value)} must be <= {high}")


def _positive(key: str, value) -> None:
    if not value > 0:
        raise InputError(f"config key {key!r} = {short(value)} must be > 0")


def _unit(key: str, value, closed_right: bool = True) -> None:
    ok = 0 <= value <= 1 if closed_right else 0 <= value < 1
    if not ok:
        rng = "[0, 1]" if closed_right else "[0, 1)"
        raise InputError(f"config key {key!r} = {value} must be in {rng}")


def check_run_name(name: str, key: str = "run.name") -> str:
    """A run name is one directory below ``run.out_dir``: letters, digits, ``. _ + -``, no leading
    dot (``..``, ``/abs`` and hidden names could escape or hide the run): the rule of
    :func:`advtrain.io.names.check_model_name` (RobustBench model names), with a run-specific message."""
    from advtrain.io.names import MODEL_NAME_MAX, MODEL_NAME_RE

    if not isinstance(name, str) or len(name) > MODEL_NAME_MAX or not MODEL_NAME_RE.fullmatch(name):
        raise InputError(f"config key {key!r} = {name!r} is not a valid run name; use 1-{MODEL_NAME_MAX} "
                         "characters from A-Z a-z 0-9 . _ + - not starting with '.' (e.g. "
                         "gkl_at_cifar10); put the run elsewhere with run.out_dir or --run-dir")
    return name


def recorded_test_data(recorded: dict, where: str) -> dict:
    """``{"root", "npz"}`` as recorded in checkpoint ``where`` (``data.root`` / ``data.test_npz`` of
    its training config), checked like a user config: a damaged or hand-edited value gives one line."""
    try:
        return {"root": coerce(recorded.get("root"), Optional[str], "data.root"),
                "npz": coerce(recorded.get("npz"), Optional[str], "data.test_npz")}
    except InputError as e:
        raise InputError(f"{where}: the training config recorded in this checkpoint is invalid ({e}); "
                         "pass the test data with --data-root / --data-npz") from None


# ----------------------------------------------------------------------------- teacher

#: the two forms of a config's ``teacher:`` section and their defaults (advtrain.train.teacher loads it)
TEACHER_FORMS = {"robustbench": {"robustbench": None, "model_dir": "checkpoints", "threat_model": "Linf"},
         "checkpoint": {"checkpoint": None, "arch": None}}


def check_teacher_section(cfg) -> Optional[Dict[str, Any]]:
    """``cfg.teacher`` validated against ``cfg.objective``, with its defaults filled in."""
    from advtrain.objectives import DISTILLATION

    name, section = cfg.objective.name, cfg.teacher
    if section is None:
        if name in DISTILLATION:
            raise InputError(f"objective {name!r} distils from a teacher; add teacher: {{robustbench: "
                             "NAME, model_dir: checkpoints}} or teacher: {checkpoint: PATH} to the config")
        return None
    if name not in DISTILLATION:
        raise InputError(f"config section 'teacher' is only used by the distillation objectives "
                         f"({', '.join(DISTILLATION)}); remove it or set objective.name")
    if not isinstance(section, dict):
        raise InputError("config section 'teacher' must be a mapping, e.g. teacher: {robustbench: NAME}")
    forms = [f for f in TEACHER_FORMS if f in section]
    if len(forms) != 1:
        raise InputError("config section 'teacher' needs exactly one of 'robustbench: NAME' or "
                         "'checkpoint: PATH'")
    allowed = TEACHER_FORMS[forms[0]]
    for key, value in section.items():
        if key not in allowed:
            raise unknown(f"key of teacher ({forms[0]} form)", f"teacher.{key}",
                          [f"teacher.{k}" for k in allowed])
        optional = value is None and key != forms[0]
        if not optional and (not isinstance(value, str) or not value):
            raise InputError(f"config key 'teacher.{key}' must be a non-empty string, got {value!r}")
    if section.get("threat_model", "Linf") not in NORMS:
        raise unknown("teacher threat model (teacher.threat_model)", section["threat_model"], NORMS)
    if "robustbench" in section:  # a zoo table's model: RobustBench's threat models only
        from advtrain.hub.zoo import check_zoo_threat_model

        check_zoo_threat_model(section.get("threat_model") or "Linf", "teacher.threat_model")
    return {**allowed, **section}
