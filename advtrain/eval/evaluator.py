"""Robustness evaluation: clean accuracy, optional PGD-K, AutoAttack, and a sanity report.

``advtrain.evaluate(model, x, y)`` runs the official AutoAttack (pyautoattack, through
``attacks.AutoAttackAdapter``) on images ``x`` in [0,1] and returns an
:class:`~advtrain.eval.settings.EvalResult` of fractions:

    clean_acc  = mean_i 1[argmax f(x_i) = y_i]
    robust_acc = mean_i 1[argmax f(x_i + delta_i) = y_i  for every attack of the suite],
                 with ||delta_i||_p <= eps and x_i + delta_i in [0,1]

The settings arrive as one :class:`~advtrain.eval.settings.EvalSettings` (or as its keyword
arguments, checked once on the way in) and travel whole to the adapter or, under ``torchrun``, to
the sharded runner (:mod:`advtrain.eval.sharded`). Every returned adversarial example is
verified to lie in the eps-ball and in [0,1]; robust <= clean is checked; :mod:`advtrain.eval.sanity`
adds cheap gradient-masking diagnostics (``flags``). ``precision="bf16"`` evaluates under autocast,
guarded by an fp32 re-run of a random subset (:func:`evaluate_low_precision`). The model's
train/eval mode is restored afterwards. Cards are written by :mod:`advtrain.eval.cards`.
"""
from __future__ import annotations

import time
from typing import Optional

import torch

from advtrain.eval import accuracy as loop  # the one accuracy loop (a module: a test may spy on it)
from advtrain.eval import sanity as checks
from advtrain.eval.accuracy import accuracy  # noqa: F401  (the one accuracy loop's public name here)
from advtrain.errors import InputError
from advtrain.eval.settings import EvalResult, EvalSettings, user_errors
from advtrain.utils import resolve_device


def evaluate(model, x: torch.Tensor, y: torch.Tensor, settings: Optional[EvalSettings] = None, *,
             device=None, state_path=None, return_adv: bool = False, **kwargs) -> EvalResult:
    """Clean + AutoAttack robust accuracy of ``model`` on ``(x, y)``; see the module docstring.

    ``settings`` or its fields as keywords (``norm="L2", eps="8/255", version="custom",
    attacks=["apgd-ce"], n_iter=..., pgd_steps=..., sanity=False, precision="bf16", ...``).
    ``x_adv``/``y_adv`` (on CPU) are kept when ``return_adv``; ``state_path`` makes AutoAttack
    resumable (the file is bound to :meth:`EvalSettings.bind`).
    """
    if settings is None:
        settings = EvalSettings(**kwargs)
    elif kwargs:
        raise InputError(f"pass either settings or keyword settings, not both ({', '.join(kwargs)})")
    _check_data(x, y)
    dev = _model_device(model) if device is None else resolve_device(device)
    if _model_device(model).type != dev.type:
        raise InputError(f"the model is on {_model_device(model)} but device={str(dev)!r}; "
                         f"call model.to({str(dev)!r}) first or pass device=None")
    x, y = x.detach().to(dev, torch.float32), y.detach().to(dev, torch.long)
    if settings.precision == "bf16":
        return evaluate_low_precision(model, x, y, settings, device=dev, state_path=state_path,
                                      return_adv=return_adv)
    return _evaluate(model, x, y, settings, dev, state_path, return_adv)


def _evaluate(model, x, y, settings: EvalSettings, device, state_path, return_adv) -> EvalResult:
    was_training = model.training
    model.eval()
    try:
        out = _run(model, x, y, settings, device, state_path)
        if settings.sanity:
            s = settings
            report, flags = checks.run_sanity(
                model, x, y, eps=s.eps, make_pgd=lambda e, k: make_pgd(e, k, s.norm),
                was_training=was_training, n=s.sanity_n, pgd_steps=s.sanity_steps,
                batch_size=s.batch_size)
            out.sanity.update(report)
            out.flags += flags
    finally:
        model.train(was_training)
    if not return_adv:
        out.x_adv = out.y_adv = None
    return out


def _run(model, x, y, s: EvalSettings, device, state_path) -> EvalResult:
    t0 = time.time()
    clean_correct, n_bad = _clean_pass(model, x, y, batch_size=s.batch_size, progress=s.progress)
    clean_acc = clean_correct / len(x)
    seconds = {"clean": time.time() - t0}
    res = run_autoattack(model, x, y, s, device=device, state_path=state_path)
    seconds.update({f"autoattack/{k}": v for k, v in dict(res.seconds).items()})
    per_attack = {k: float(v) for k, v in dict(res.per_attack).items()}
    robust_correct = int(res.robust.sum())
    robust_acc = robust_correct / len(x)
    ball, ball_flags = checks.verify_ball(x, res.x_adv.to(device), s.eps, s.norm)
    flags = checks.check_finite_logits(n_bad, len(x))
    flags += checks.evaluation_flags(clean_acc, robust_acc, per_attack, list(res.checks),
                                     counts=(clean_correct, robust_correct))
    out = EvalResult(settings=s, clean_acc=clean_acc, robust_acc=robust_acc,
                     per_attack=per_attack, attacks=list(res.attacks), n_ex=len(x),
                     device=str(device), seconds=seconds, flags=flags + ball_flags,
                     sanity={"eps_ball": ball, "autoattack_clean_acc": res.clean_accuracy},
                     x_adv=res.x_adv.detach().cpu(), y_adv=res.y_adv.detach().cpu())
    if s.pgd_steps:
        t0 = time.time()
        out.pgd_acc = loop.accuracy(model, x, y, batch_size=s.batch_size, progress=s.progress,
                                    attack=make_pgd(s.eps, s.pgd_steps, s.norm))
        seconds[f"pgd-{s.pgd_steps}"] = time.time() - t0
    return out


def run_autoattack(model, x, y, settings: EvalSettings, *, device, state_path=None):
    """The AutoAttack suite through ``attacks.AutoAttackAdapter`` (pyautoattack underneath).

    Under ``torchrun`` the examples are sharded over the ranks with a bit-identical result
    (:mod:`advtrain.eval.sharded`). A state file is read and written through advtrain's safe
    loader and atomic writer, bound to ``settings.bind(model, x, y)``."""
    from advtrain import distributed as D

    if D.is_initialized():
        from advtrain.eval.sharded import run_autoattack_sharded

        return run_autoattack_sharded(model, x, y, settings, device=device, state_path=state_path)
    from advtrain.io.atomic import atomic_save
    from advtrain.eval.settings import load_state_file
    from attacks import AutoAttackAdapter

    key = settings.bind(model, x, y) if state_path is not None else None
    with user_errors():
        adapter = AutoAttackAdapter(**settings.adapter_kwargs(), device=str(device),
                                    state_path=state_path, progress=settings.progress,
                                    state_key=key, load_state=load_state_file,
                                    save_state=atomic_save)
        return adapter.run(model, x, y)


def make_pgd(eps: float, steps: int, norm: str):
    """PGD-K with step size 2.5 * eps / K (Madry et al.), cross-entropy loss, random start."""
    from attacks import PGD

    return PGD(eps=eps, alpha=2.5 * eps / max(steps, 1), steps=steps, norm=norm)


def _clean_pass(model, x, y, *, batch_size: int, progress: bool) -> tuple:
    """(number classified correctly, number of images whose logits hold NaN/Inf), through the one
    accuracy loop."""
    bad = []

    def count_bad(logits):
        bad.append(int((~torch.isfinite(logits)).reshape(len(logits), -1).any(1).sum()))

    hits = loop.correct(model, x, y, batch_size=batch_size, progress=progress, desc="clean",
                        on_logits=count_bad)
    return int(hits.sum()), sum(bad)


def _check_data(x, y) -> None:
    """Images (N, C, H, W) in [0, 1] with one label each (one-line :class:`InputError`)."""
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise InputError(f"expected images (N, C, H, W) and labels (N,), got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise InputError(f"images must lie in [0, 1] (found [{float(x.min()):.3g}, "
                         f"{float(x.max()):.3g}]); put normalisation inside the model")


def _model_device(model) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


# ---------------------------------------------------------------- low-precision evaluation guard

class AutocastModel(torch.nn.Module):
    """``model`` run under ``torch.autocast(dtype)``; logits returned in float32."""

    def __init__(self, model: torch.nn.Module, dtype=torch.bfloat16):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x):
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x).float()


def evaluate_low_precision(model, x, y, settings: EvalSettings, *, device, state_path=None,
                           return_adv: bool = False, lowp_model=None,
                           max_gap: float = 0.0) -> EvalResult:
    """The evaluation in bf16, guarded by an fp32 re-evaluation of a random subset.

    The full evaluation runs on ``lowp_model`` (default ``AutocastModel(model)``, CUDA only).
    Then ``settings.guard_n`` examples drawn with ``settings.guard_seed`` are evaluated again in
    fp32 with the same settings; with ``r_lp``/``r_32`` the robust flags of the subset::

        gap = |mean(r_lp) - mean(r_32)|,   disagree = sum(r_lp != r_32)

    ``result.sanity["precision"]`` records both, and a ``precision-gap`` flag is added when
    ``gap > max_gap`` or ``disagree > 0``: the card's sidecar then says to report fp32 instead.
    """
    device = torch.device(device)
    if lowp_model is None:
        if device.type != "cuda":
            raise InputError("precision bf16 evaluation needs a CUDA device; evaluate in fp32 on "
                             "CPU (the default)")
        lowp_model = AutocastModel(model)
    out = _evaluate(lowp_model, x, y, settings, device, state_path, True)
    g = torch.Generator().manual_seed(settings.guard_seed)
    idx = torch.randperm(len(y), generator=g)[:min(settings.guard_n, len(y))].sort().values
    fp32 = settings.replace(precision="fp32", sanity=False)
    ref = _evaluate(model, x[idx], y[idx], fp32, device, None, True)
    out.sanity["precision"] = report = _guard_report(out.y_adv[idx], ref.y_adv, y[idx].cpu(),
                                                     settings)
    if report["gap"] > max_gap or report["disagree"]:
        out.flags.append(checks.flag(
            "precision-gap", f"bf16 and fp32 robust flags differ on {report['disagree']} of "
            f"{report['guard_n']} re-checked examples (robust {report['robust_lowp']:.2%} vs "
            f"{report['robust_fp32']:.2%}); report the fp32 evaluation"))
    if not return_adv:
        out.x_adv = out.y_adv = None
    return out


def _guard_report(y_lowp, y_fp32, y, settings: EvalSettings) -> dict:
    r_lp, r_32 = y_lowp.cpu() == y, y_fp32.cpu() == y
    report = {"precision": "bf16", "guard_n": int(len(y)), "guard_seed": settings.guard_seed,
              "robust_lowp": r_lp.float().mean().item(), "robust_fp32": r_32.float().mean().item(),
              "disagree": int((r_lp != r_32).sum())}
    report["gap"] = abs(report["robust_lowp"] - report["robust_fp32"])
    return report
