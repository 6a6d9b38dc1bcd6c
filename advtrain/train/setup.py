"""Building a run for :mod:`advtrain.train.loop`: run directory rules, parts, the per-epoch test metric.

- ``prepare_run_dir``: a new run never overwrites an existing run directory (one without a checkpoint
  yet may be reused) nor one in use; ``resume`` continues one from ``last.pt`` (else the newest intact
  ``epoch_N.pt``) and refuses a config that differs from the stored one unless ``force``.
- ``build_parts``: the :class:`advtrain.train.parts.Parts` of a run: device, model, objective (with its
  frozen teacher, if any), optimiser (SGD or AdamW over model + objective extra parameters, the
  weight-decay exclusion rules of :func:`no_decay_names`), loader, AWP, EMA, test subset, autocast
  and fp16's gradient scaler; and the GPU math policy
  (:func:`_math_policy`).
- ``fgsm_accuracy``: FGSM accuracy for the catastrophic-overfitting guard;
- ``clean_and_pgd``: clean and PGD accuracy through :func:`advtrain.eval.evaluator.accuracy` (given norm
  and eps, step eps/4 -- the DM recipe's PGD-40 step, used for every per-epoch PGD-K whatever K --,
  CE or CW, uniform start from a fixed seed so it neither varies between epochs nor disturbs the
  training RNG).
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from advtrain.train import checkpoint as ck
from advtrain import config as C
from advtrain import distributed as D
from advtrain.utils import resolve_device
from advtrain.errors import CheckpointError, InputError
from advtrain.io.atomic import atomic_write_text
from advtrain.data.imagefolder import folder_options, train_augment_options
from advtrain.models.timm_models import model_options
from advtrain.train.parts import Parts
from advtrain.train.runlock import holder, holds_run, in_use_error
from advtrain.train.step import steps_per_epoch

#: resolved-config entries that may change between an interrupted run and its resumption
RESUME_FREE = {"run.name", "run.out_dir", "run.device", "run.progress", "data.workers", "notes",
               "log.tensorboard"}


def _as_config(config) -> C.Config:
    if isinstance(config, C.Config):
        return config
    if isinstance(config, dict):
        return C.from_dict(config)
    return C.load(config)


def prepare_run_dir(config, run_dir: Optional[str], resume: bool, force: bool
                    ) -> Tuple[C.Config, str, Optional[Dict[str, Any]]]:
    """(config, run directory, checkpoint state or None) after the overwrite / resume checks."""
    if resume:
        if not run_dir or not os.path.isdir(run_dir):
            raise InputError(f"cannot resume: run directory {run_dir!r} not found; give the RUN_DIR "
                             "of an earlier 'advtrain train'")
        stored = os.path.join(run_dir, "config.yaml")
        if config is None:
            if not os.path.isfile(stored):
                raise InputError(f"cannot resume: {stored} missing; pass the config file too")
            config = stored
        cfg = _as_config(config)
        _remove_stale_temp_files(run_dir)
        _check_outputs_are_files(run_dir)
        last, state = ck.resume_point(run_dir)
        if last is not None and os.path.basename(last) != ck.LAST and D.is_main():
            print(f"advtrain: {ck.last_path(run_dir)} is missing; resuming from {last} "
                  f"(epoch {state['epoch']})", file=sys.stderr)
        if state is not None and not force:
            if not isinstance(state.get("config"), dict):
                raise CheckpointError(f"{last} records no training config to compare with; pass "
                                      "--force to resume anyway")
            _check_same(C.resolve(cfg), state["config"], run_dir)
        if state is not None:
            from advtrain.train.teacher import check_identity

            check_identity(state.get("teacher"), cfg.teacher, cfg.data.dataset, last)
        return cfg, run_dir, state
    if config is None:
        raise InputError("no config given; pass a YAML file such as configs/cpu/tiny_trades.yaml")
    cfg = _as_config(config)
    run_dir = run_dir or os.path.join(cfg.run.out_dir, cfg.run.name)
    pid = holder(run_dir)
    if pid is not None:
        raise in_use_error(run_dir, pid)
    if holds_run(run_dir):  # a directory with only config.yaml (no epoch finished) may be reused
        raise InputError(f"run directory {run_dir!r} already exists; continue it with --resume "
                         f"{run_dir}, or choose another run.name / --run-dir")
    return cfg, run_dir, None


def _remove_stale_temp_files(run_dir: str) -> None:
    """Temp files of an atomic write cut short by a crash (``.NAME.XXXX.tmp``); never read."""
    for name in os.listdir(run_dir):
        if name.startswith(".") and name.endswith(".tmp"):
            os.remove(os.path.join(run_dir, name))


#: files the trainer replaces in a run directory: something else in their place (a directory, a
#: link loop) would only surface after an epoch of work, when the write fails
_OUTPUTS = re.compile(r"(last|best|epoch_\d+)\.pt|metrics\.csv|curves\.(png|svg)")


def _check_outputs_are_files(run_dir: str) -> None:
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        if _OUTPUTS.fullmatch(name) and not os.path.isfile(path):
            what = "a directory" if os.path.isdir(path) else "not a regular file (a broken link?)"
            raise InputError(f"cannot resume: {path} is {what}, where the run writes its {name}; "
                             "move it away and resume again")


def start_run_dir(cfg: C.Config, run_dir: str) -> None:
    """Create a new run directory with its ``config.yaml`` (after every part was built, so a
    mistake found while building leaves nothing behind)."""
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_text(os.path.join(run_dir, "config.yaml"), C.dump(cfg))


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_same(new: Dict[str, Any], old: Dict[str, Any], run_dir: str) -> None:
    """Refuse a changed setting; a key the stored config lacks (added by a later release, e.g.
    ``tf32``) counts as unchanged while it keeps its default."""
    a, b = _flatten(new), _flatten(old)
    default = _flatten(C.to_dict(C.Config()))
    b.update({k: default[k] for k in a if k not in b and k in default})
    diff = [k for k in sorted(set(a) | set(b)) if k not in RESUME_FREE and a.get(k) != b.get(k)]
    if diff:
        shown = ", ".join(f"{k}: {b.get(k)!r} -> {a.get(k)!r}" for k in diff[:4])
        raise InputError(f"config differs from the one {run_dir!r} was trained with ({shown}"
                         f"{', ...' if len(diff) > 4 else ''}); pass --force to resume anyway")


# ----------------------------------------------------------------------------- parts

def build_parts(cfg: C.Config, fresh: bool) -> Parts:
    """Everything the loop needs; seeds first so a fresh run's initial weights are reproducible."""
    from advtrain.data import build_train_loader, load_test_arrays, num_classes, seed_everything
    from advtrain.models import create_model

    _math_policy(cfg)
    seed_everything(cfg.run.seed)
    device = D.local_device(resolve_device(cfg.run.device, flag="run.device"), D.local_rank())  # cuda:LOCAL_RANK
    d = cfg.data
    n_cls = num_classes(d.dataset, d.num_classes)
    model = create_model(cfg.model.arch, dataset=d.dataset, num_classes=n_cls,
                         **model_options(cfg)).to(device)
    note = getattr(model, "weights_note", None)
    if note and fresh and D.is_main():  # fine-tuning: which head keys were left out
        print(f"advtrain: {note}", file=sys.stderr)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    _check_model_input(cfg, model, n_cls, device)
    teacher = _teacher(cfg, device)
    objective = make_objective(cfg, n_cls, **teacher).to(device)
    loader = build_train_loader(
        d.dataset, root=d.root, train_npz=d.train_npz, synthetic_npz=d.synthetic_npz,
        synthetic_fraction=d.synthetic_fraction, augment=d.augment,
        batch_size=D.per_rank_batch(d.batch_size), rank=D.rank(), world_size=D.world_size(),
        workers=d.workers, seed=cfg.run.seed, drop_last=d.drop_last, subset=d.train_subset,
        holdout=d.holdout, device=device, **folder_options(d),
        **({"augment_options": train_augment_options(d)} if folder_options(d) else {}))  # augmented, on the device
    _check_steps(loader, d)
    test = None
    if d.test_subset > 0:
        test = (_folder_test_subset(d, load_test_arrays) if folder_options(d) else
                _test_subset(load_test_arrays(d.dataset, root=d.root, npz=d.test_npz), d.test_subset))
    checked = _check_teacher(cfg, teacher, n_cls, test, device)
    return Parts(device=device, model=model, objective=objective, num_classes=n_cls, loader=loader,
                 optimizer=make_optimizer(cfg, model, objective), test=test,
                 holdout=_holdout_set(cfg), awp=_awp(cfg, model),
                 ema=_ema(cfg, model, steps_per_epoch(len(loader), cfg.optim.accum_steps)),
                 autocast=_autocast(cfg, device), teacher_check=checked, scaler=_scaler(cfg, device))


def _check_model_input(cfg: C.Config, model: nn.Module, n_cls: int, device) -> None:
    """The model against its data before the data is built: one forward of one image of the size
    the loader will give (the facts row's, ``data.image_size`` for ImageFolder) must give
    ``n_cls`` scores (a timm ViT built for 224 px fails here in one line, not in the first step).
    Eval mode, no gradient: no weight, statistic or random state changes."""
    from advtrain.data.facts import facts
    from advtrain.data.imagefolder import image_size_of
    from advtrain.eval.protocol import check_model

    size = image_size_of(cfg.data) if folder_options(cfg.data) else facts(cfg.data.dataset).image_size
    check_model(model, cfg.data.dataset, classes=n_cls, image_size=size, device=device,
                what=f"model.arch {cfg.model.arch}", fix="choose a model.arch built for this "
                "image size (ImageFolder: or set data.image_size to the one it takes)")


def check_train_images(cfg: C.Config, images: Dict[str, Any],
                       state: Optional[Dict[str, Any]]) -> None:
    """An ImageFolder run's data, before a step: the test folder has the training folder's
    classes (else every test accuracy is scored against shifted labels), and a resume reads the
    image list the run started with (``train_images`` of its checkpoint: a removed, added or
    resized image would silently change the run; even ``--force`` does not skip this)."""
    from advtrain.data.imagefolder import check_classes, scan

    root = cfg.data.root
    if cfg.data.test_subset > 0:
        check_classes(images["classes"], scan(root, "test")[0], os.path.join(root, "val"),
                      os.path.join(root, "train"))
    recorded = (state or {}).get("train_images")
    if not isinstance(recorded, dict):
        return  # a fresh run, or a checkpoint of an earlier release: nothing to compare
    check_classes(recorded.get("classes"), images["classes"], os.path.join(root, "train"),
                  "the run's checkpoint")
    if recorded.get("list_sha256") != images["list_sha256"]:
        raise CheckpointError(
            f"cannot resume: the training images under {os.path.join(root, 'train')} changed "
            f"since the run started ({recorded.get('files')} images then, {images['files']} now, "
            f"or files renamed or resized); restore them or start a new run")


def train_data_flags(cfg: C.Config, say: bool) -> list:
    """``["trained-on-test-images"]`` when the run trains on its own test data (``data.train_npz``
    is ``data.test_npz``, or an ImageFolder's ``train/`` is its ``val/``), said once as a warning:
    every test accuracy this run reports is then measured on training images."""
    d = cfg.data

    def same(a, b) -> bool:
        try:
            return bool(a and b) and os.path.samefile(a, b)
        except OSError:
            return False

    pairs = [(d.train_npz, d.test_npz)]
    if d.root and folder_options(d):
        pairs.append((os.path.join(d.root, "train"), os.path.join(d.root, "val")))
    hit = next(((a, b) for a, b in pairs if same(a, b)), None)
    if hit is None:
        return []
    if say:
        print(f"warning [trained-on-test-images]: the training data {hit[0]} is the test data "
              f"{hit[1]}; every test accuracy of this run is measured on training images, not "
              "held out (see docs/FLAGS.md#trained-on-test-images)", file=sys.stderr)
    return ["trained-on-test-images"]


def _check_teacher(cfg: C.Config, teacher: Dict[str, Any], n_cls: int, test, device
                   ) -> Optional[str]:
    """Before training: the teacher's classes, logits and input range against this dataset;
    returns the line that reports the result (None without a teacher)."""
    if not teacher:
        return None
    from advtrain.train.teacher import check_teacher, describe

    what = describe(cfg.teacher)
    acc = check_teacher(teacher["teacher"], n_cls, what, test, device)
    if acc is None:
        return f"teacher {what}: outputs {n_cls} logits per image (accuracy not measured)"
    return (f"teacher {what}: clean {100 * acc:.2f}% on the test subset of {len(test[1])} images "
            f"(chance {100 / n_cls:.2f}%): check passed")


def _check_steps(loader, d) -> None:
    """A loader with no batch would train nothing and still report "done"."""
    if len(loader) > 0:
        return
    sampler = loader.batch_sampler if loader.batch_size is None else loader.sampler
    n = len(sampler) if hasattr(sampler, "__len__") else len(loader.dataset)
    raise InputError(f"the training data gives 0 optimizer steps per epoch ({n} images per process, "
                     f"data.batch_size {d.batch_size}, data.drop_last {str(d.drop_last).lower()}); "
                     f"use data.batch_size <= {n} or data.drop_last: false")


def _teacher(cfg: C.Config, device: torch.device) -> Dict[str, Any]:
    """``{"teacher": model}`` for the distillation objectives (config ``teacher:``), else ``{}``."""
    if cfg.teacher is None:
        return {}
    from advtrain.train.teacher import load_teacher

    return {"teacher": load_teacher(cfg.teacher, cfg.data.dataset, device)}


def _test_subset(arrays, n: int):
    """A fixed random subset of ``n`` test images (seed 0): test files may be sorted by class."""
    x, y = arrays
    idx = _subset_indices(len(y), n)
    return x[idx].contiguous(), y[idx].contiguous()


def _folder_test_subset(d, load_test_arrays):
    """:func:`_test_subset` of an ImageFolder ``val/``, decoding only the chosen images."""
    return load_test_arrays(d.dataset, root=d.root, **folder_options(d, "test"),
                            indices=lambda total: _subset_indices(total, d.test_subset))


def _subset_indices(total: int, n: int) -> torch.Tensor:
    if n > total:
        raise InputError(f"data.test_subset = {n} but the test set has {total} images; "
                         f"use data.test_subset <= {total} (0 disables the per-epoch test)")
    return torch.randperm(total, generator=torch.Generator().manual_seed(0))[:n].sort().values


def _holdout_set(cfg: C.Config):
    """The ``data.holdout`` images the loader leaves out (None when there are none or no scoring)."""
    d = cfg.data
    if d.holdout == 0 or cfg.eval.holdout_every == 0:
        return None
    from advtrain.data import load_holdout_arrays

    return load_holdout_arrays(d.dataset, d.holdout, root=d.root, npz=d.train_npz)


def make_objective(cfg: C.Config, num_classes: int, **objects: Any) -> nn.Module:
    """The objective from the resolved config: its typed options and attack section, as they are
    (nothing re-checked, re-defaulted or rebuilt here)."""
    from advtrain.objectives import OBJECTIVES

    cls = OBJECTIVES[cfg.objective.name]
    return cls(cfg.objective.options, cfg.attack, dataset=cfg.data.dataset, num_classes=num_classes,
               **objects)


def make_optimizer(cfg: C.Config, model: nn.Module, objective: nn.Module) -> torch.optim.Optimizer:
    """``optim.name`` (SGD, AdamW, or Adam with its L2 weight decay added to the gradient) over model
    + objective extra parameters, in two groups: with weight decay, and without (the parameters
    :func:`no_decay_names` names)."""
    o = cfg.optim
    scales = layer_scales(model, o.layer_decay) if o.layer_decay is not None else {}
    keyed: Dict[Tuple[float, bool], List[nn.Parameter]] = {}
    for module in [model] + ([objective] if objective.extra_parameters() else []):
        extra = {id(p) for p in objective.extra_parameters()} if module is objective else None
        skip = no_decay_names(module, o)
        for name, p in module.named_parameters():
            if not p.requires_grad or (extra is not None and id(p) not in extra):
                continue
            scale = scales.get(name, 1.0) if module is model else 1.0
            keyed.setdefault((scale, name not in skip), []).append(p)
    groups: List[Dict[str, Any]] = []
    # decayed groups first (the group order of checkpoints from earlier releases), then the rest
    for (scale, decayed), params in sorted(keyed.items(), key=lambda kv: not kv[0][1]):
        group = {"params": params, "weight_decay": o.weight_decay if decayed else 0.0}
        if o.layer_decay is not None:
            group["lr_scale"] = scale
        groups.append(group)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    if o.name == "adam":  # GradAlign's CNN runs (train.py: torch.optim.Adam(weight_decay=...))
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


def layer_scales(model: nn.Module, layer_decay: float) -> Dict[str, float]:
    """Layer-wise lr decay (BEiT, timm's ``param_groups_layer_decay``): ``{name: layer_decay **
    (L - 1 - layer(name))}`` for the parameters of ``model``'s timm network, layers from timm's
    ``group_matcher(coarse=False)`` (its fallback map without one), the head at scale 1. The
    weight-decay exclusion stays the configured rule (timm's layer-decay path uses ``ndim == 1``)."""
    from timm.optim.optim_factory import _layer_map, group_parameters

    net = getattr(model, "model", model)
    prefix = "model." if net is not model else ""
    if hasattr(net, "group_matcher"):
        layer_map = group_parameters(net, net.group_matcher(coarse=False), reverse=True)
    else:
        layer_map = _layer_map(net)
    top = max(layer_map.values())
    return {prefix + name: layer_decay ** (top - layer_map.get(name, top))
            for name, _ in net.named_parameters()}


def no_decay_names(module: nn.Module, o) -> set:
    """Names (``module.named_parameters()``) of the parameters without weight decay:

    - ``wd_exclude_bn``: parameters of BatchNorm layers;
    - ``wd_exclude: timm``: timm's ``param_groups_weight_decay`` rule (``create_optimizer_v2`` with
      ``filter_bias_and_bn``): ``ndim <= 1`` or a name ending in ``.bias`` or listed by a
      ``no_weight_decay()`` method (of any sub-module, its names taken relative to it, as timm
      asks the timm network that advtrain wraps) -- every normalisation layer, all biases, 1-D
      layer scales, ViT position embeddings and class tokens;
    - ``wd_exclude: 1d``: the same without the ``no_weight_decay()`` names (revisiting-at, non-ConvNeXt);
    - ``wd_exclude: bn_bias_names``: names containing ``bn`` or ``.bias`` (revisiting-at's rule for
      ConvNeXt / ResNet archs: LayerNorm weights keep their decay).
    """
    out = set()
    rule = o.wd_exclude
    listed = set()
    if rule == "timm":
        for prefix, sub in module.named_modules():
            fn = getattr(sub, "no_weight_decay", None)
            if callable(fn) and isinstance(sub, nn.Module):
                listed |= {(prefix + "." if prefix else "") + n for n in fn()}
    bn_params = set()
    if o.wd_exclude_bn:
        for prefix, sub in module.named_modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                bn_params |= {(prefix + "." if prefix else "") + n for n, _ in sub.named_parameters(recurse=False)}
    for name, p in module.named_parameters():
        if name in bn_params:
            out.add(name)
        elif rule in ("timm", "1d") and (p.ndim <= 1 or name.endswith(".bias") or name in listed):
            out.add(name)
        elif rule == "bn_bias_names" and ("bn" in name or ".bias" in name):
            out.add(name)
    return out


def _awp(cfg: C.Config, model: nn.Module):
    if not cfg.awp.enabled:
        return None
    from advtrain.train.awp import AWP

    return AWP(model, gamma=cfg.awp.gamma, warmup=cfg.awp.warmup)


def _ema(cfg: C.Config, model: nn.Module, steps_per_epoch: int):
    if not cfg.ema.enabled:
        return None
    from advtrain.train.ema import EMA

    warm = int(0.025 * cfg.optim.epochs * steps_per_epoch) if cfg.ema.dm_warmup else None
    return EMA(model, decay=cfg.ema.decay, start_epoch=cfg.ema.start_epoch, dm_warmup_steps=warm)


#: autocast dtypes of the reduced training precisions
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(cfg: C.Config, device: torch.device):
    """CUDA autocast in bf16 / fp16 (the attack, the forward and the loss), else a no-op. On a CPU
    both are refused: CPU autocast runs a different op set (and fp16 matmuls are slow or missing)
    and would not test what a GPU run does."""
    if cfg.precision in AUTOCAST:
        if device.type != "cuda":
            raise InputError(f"precision {cfg.precision} needs a CUDA device; use precision=fp32 on CPU")
        return functools.partial(torch.autocast, "cuda", dtype=AUTOCAST[cfg.precision])
    return contextlib.nullcontext


def _scaler(cfg: C.Config, device: torch.device):
    """fp16's gradient scaler (torch defaults: scale 2**16, x0.5 on overflow, x2 per 2000 clean
    steps, as timm's NativeScaler and revisiting-at use it); None otherwise."""
    if cfg.precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def _math_policy(cfg: C.Config) -> None:
    """GPU math settings of a run (no effect on CPU).

    - TF32 for fp32 matmuls and convolutions (``tf32``, default on: ~8x the fp32 rate on an A100 or
      H100 at 10 mantissa bits, which SGD training does not notice); ``precision: bf16`` keeps it,
      so whatever stays outside autocast is not run in true fp32;
    - ``cudnn.benchmark`` (fastest convolution algorithm per input shape; training shapes are
      fixed) unless ``run.deterministic``, which asks cudnn for deterministic algorithms instead.
    """
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.backends.cudnn.allow_tf32 = cfg.tf32
    torch.backends.cudnn.deterministic = cfg.run.deterministic
    torch.backends.cudnn.benchmark = not cfg.run.deterministic


# ----------------------------------------------------------------------------- test metric

@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model``'s eval-mode argmax labels of ``x`` (on the CPU; the model's mode is restored)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def clean_and_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, seed: int,
                  eps: float = 8 / 255, norm: str = "Linf", loss: str = "ce",
                  batch_size: int = 256) -> Tuple[float, Optional[float]]:
    """(clean accuracy, PGD-``steps`` accuracy in the ``norm`` ball of radius ``eps``, step eps/4)
    on ``(x, y)``; PGD None if steps 0."""
    from attacks import PGD
    from advtrain.eval.evaluator import accuracy

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x, y = x.to(device), y.to(device)
    clean = accuracy(model, x, y, batch_size=batch_size, progress=False)
    robust = None
    if steps:
        attack = PGD(eps=eps, alpha=eps / 4, steps=steps, norm=norm, loss=loss, init="uniform")
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            robust = accuracy(model, x, y, batch_size=batch_size, attack=attack, progress=False)
    model.train(was_training)
    return clean, robust


def fgsm_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255,
                  norm: str = "Linf", batch_size: int = 256) -> float:
    """Accuracy under FGSM (one step of size ``eps`` from ``x``, no random start, model in eval
    mode): the single-step side of the catastrophic-overfitting guard (:mod:`advtrain.train.guard`)."""
    from attacks import FGSM
    from advtrain.eval.evaluator import accuracy

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    acc = accuracy(model, x.to(device), y.to(device), batch_size=batch_size, attack=FGSM(eps=eps, norm=norm),
                   progress=False)
    model.train(was_training)
    return acc
