"""Robustness evaluation: clean accuracy, optional PGD-K, AutoAttack, and a sanity report.

``advtrain.evaluate(model, x, y)`` runs the official AutoAttack (pyautoattack, through
``attacks.AutoAttackAdapter``) on images ``x`` in [0,1] and returns fractions:

    clean_acc  = mean_i 1[argmax f(x_i) = y_i]
    robust_acc = mean_i 1[argmax f(x_i + delta_i) = y_i  for every attack of the suite],
                 with ||delta_i||_p <= eps and x_i + delta_i in [0,1]

Every returned adversarial example is verified to lie in the eps-ball and in [0,1]; robust <= clean
is checked; :mod:`advtrain.checks` adds cheap gradient-masking diagnostics (``flags``). The model's
train/eval mode is restored afterwards. Cards are written by :mod:`advtrain.cards`.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from advtrain import checks
from advtrain.errors import InputError, unknown
from advtrain.utils import parse_eps, resolve_device

NORMS = ("Linf", "L2")
VERSIONS = ("standard", "plus", "rand", "custom")
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


def evaluate(model, x: torch.Tensor, y: torch.Tensor, *, norm: str = "Linf", eps: float = 8 / 255,
             version: str = "standard", attacks: Optional[Sequence[str]] = None,
             batch_size: int = 500, seed: int = 0, device=None, state_path=None,
             return_adv: bool = False, pgd_steps: Optional[int] = None, sanity: bool = True,
             sanity_n: int = 100, sanity_steps: int = 10, progress: bool = True,
             n_iter: Optional[int] = None, n_queries: Optional[int] = None) -> dict:
    """Clean + AutoAttack robust accuracy of ``model`` on ``(x, y)``; see the module docstring.

    Returns a dict with ``clean_acc``, ``robust_acc``, ``per_attack`` (accuracy after each attack,
    cumulative, incl. ``clean``), ``seconds``, ``flags``, ``sanity``, ``n_ex``, ``eps``, ``norm``,
    ``version``, ``attacks``, ``seed``, ``device``; ``pgd_acc``/``pgd_steps`` when ``pgd_steps``
    is given; ``x_adv``/``y_adv`` (on CPU) when ``return_adv``. ``eps`` may be ``"8/255"``.
    ``sanity*`` control :mod:`advtrain.checks` (``sanity=False`` skips the model checks);
    ``n_iter``/``n_queries`` shorten AutoAttack for tests only (the official budget is the default).
    """
    eps = parse_eps(eps)
    attacks = _check_args(x, y, norm, eps, version, attacks, batch_size)
    dev = _model_device(model) if device is None else resolve_device(device)
    if _model_device(model).type != dev.type:
        raise InputError(f"the model is on {_model_device(model)} but device={str(dev)!r}; "
                         f"call model.to({str(dev)!r}) first or pass device=None")
    x, y = x.detach().to(dev, torch.float32), y.detach().to(dev, torch.long)
    was_training = model.training
    model.eval()
    try:
        out = _run(model, x, y, norm=norm, eps=eps, version=version, attacks=attacks,
                   batch_size=batch_size, seed=seed, device=dev, state_path=state_path,
                   pgd_steps=pgd_steps, progress=progress,
                   aa_budget={"n_iter": n_iter, "n_queries": n_queries})
        if sanity:
            report, flags = checks.run_sanity(
                model, x, y, eps=eps, make_pgd=lambda e, k: make_pgd(e, k, norm),
                was_training=was_training, n=sanity_n, pgd_steps=sanity_steps,
                batch_size=batch_size)
            out["sanity"].update(report)
            out["flags"] += flags
    finally:
        model.train(was_training)
    if not return_adv:
        out.pop("x_adv"), out.pop("y_adv")
    return out


def _run(model, x, y, *, norm, eps, version, attacks, batch_size, seed, device, state_path,
         pgd_steps, progress, aa_budget) -> dict:
    t0 = time.time()
    clean_correct, n_bad = _clean_pass(model, x, y, batch_size=batch_size, progress=progress)
    clean_acc = clean_correct / len(x)
    seconds = {"clean": time.time() - t0}
    res = run_autoattack(model, x, y, norm=norm, eps=eps, version=version, attacks=attacks,
                         batch_size=batch_size, seed=seed, device=device, state_path=state_path,
                         progress=progress, **aa_budget)
    seconds.update({f"autoattack/{k}": v for k, v in dict(res.seconds).items()})
    per_attack = {k: float(v) for k, v in dict(res.per_attack).items()}
    robust_correct = int(res.robust.sum())
    robust_acc = robust_correct / len(x)
    ball, ball_flags = checks.verify_ball(x, res.x_adv.to(device), eps, norm)
    flags = checks.check_finite_logits(n_bad, len(x))
    flags += checks.evaluation_flags(clean_acc, robust_acc, per_attack, list(res.checks),
                                     counts=(clean_correct, robust_correct))
    out = {"clean_acc": clean_acc, "robust_acc": robust_acc, "per_attack": per_attack,
           "seconds": seconds, "flags": flags + ball_flags, "n_ex": len(x), "eps": eps,
           "norm": norm, "version": version, "attacks": list(res.attacks or attacks or []),
           "seed": seed, "device": str(device),
           "sanity": {"eps_ball": ball, "autoattack_clean_acc": res.clean_accuracy},
           "x_adv": res.x_adv.detach().cpu(), "y_adv": res.y_adv.detach().cpu()}
    if pgd_steps:
        t0 = time.time()
        out["pgd_acc"] = accuracy(model, x, y, batch_size=batch_size, progress=progress,
                                  attack=make_pgd(eps, pgd_steps, norm))
        out["pgd_steps"] = int(pgd_steps)
        seconds[f"pgd-{pgd_steps}"] = time.time() - t0
    return out


def run_autoattack(model, x, y, *, norm, eps, version, attacks, batch_size, seed, device,
                   state_path=None, n_iter=None, n_queries=None, progress=False):
    """The AutoAttack suite through ``attacks.AutoAttackAdapter`` (pyautoattack underneath).

    ``n_iter``/``n_queries`` (None: AutoAttack's budget) are for tests only. Under ``torchrun``
    the examples are sharded over the ranks with a bit-identical result (:mod:`advtrain.evaluation_dist`)."""
    from advtrain import distributed as D

    if D.is_initialized():
        from advtrain.evaluation_dist import run_autoattack_sharded

        return run_autoattack_sharded(model, x, y, norm=norm, eps=eps, version=version,
                                      attacks=attacks, batch_size=batch_size, seed=seed,
                                      device=device, state_path=state_path, n_iter=n_iter,
                                      n_queries=n_queries)
    from attacks import AutoAttackAdapter

    adapter = AutoAttackAdapter(norm=norm, eps=eps, version=version, attacks=attacks, seed=seed,
                                batch_size=batch_size, device=str(device), state_path=state_path,
                                n_iter=n_iter, n_queries=n_queries, progress=progress)
    return adapter.run(model, x, y)


def make_pgd(eps: float, steps: int, norm: str):
    """PGD-K with step size 2.5 * eps / K (Madry et al.), cross-entropy loss, random start."""
    from attacks import PGD

    return PGD(eps=eps, alpha=2.5 * eps / max(steps, 1), steps=steps, norm=norm)


def accuracy(model, x, y, *, batch_size: int = 500, attack=None, progress: bool = True,
             desc: Optional[str] = None) -> float:
    """Fraction of ``y`` predicted correctly on ``x`` (or on ``attack(model, x, y)``)."""
    correct = 0
    starts = range(0, len(x), batch_size)
    label = desc or ("clean" if attack is None else type(attack).__name__)
    for i in tqdm(starts, desc=label, disable=not progress, leave=False):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if attack is not None:
            xb = attack(model, xb, yb)
        with torch.no_grad():
            correct += (model(xb).argmax(1) == yb).sum().item()
    return correct / max(len(x), 1)


@torch.no_grad()
def _clean_pass(model, x, y, *, batch_size: int, progress: bool) -> tuple:
    """(number classified correctly, number of images whose logits hold NaN/Inf)."""
    correct = bad = 0
    for i in tqdm(range(0, len(x), batch_size), desc="clean", disable=not progress, leave=False):
        logits = model(x[i:i + batch_size])
        correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
        bad += int((~torch.isfinite(logits)).reshape(len(logits), -1).any(1).sum())
    return correct, bad


def _check_args(x, y, norm, eps, version, attacks, batch_size) -> Optional[list]:
    """Validate user inputs (one-line :class:`InputError`); returns the attack list or None."""
    if norm not in NORMS:
        raise unknown("norm", norm, NORMS)
    if version not in VERSIONS:
        raise unknown("AutoAttack version", version, VERSIONS)
    if not (0 <= float(eps) <= 1):
        raise InputError(f"eps {eps!r} is outside [0, 1]; images live in [0, 1] (e.g. 8/255)")
    if int(batch_size) < 1:
        raise InputError(f"batch size {batch_size!r} must be a positive integer")
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise InputError(f"expected images (N, C, H, W) and labels (N,), got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise InputError(f"images must lie in [0, 1] (found [{float(x.min()):.3g}, "
                         f"{float(x.max()):.3g}]); put normalisation inside the model")
    if attacks is not None and version != "custom":
        raise InputError(f"attacks={list(attacks)} needs version 'custom' (version {version!r} "
                         "fixes its own attacks)")
    if version == "custom":
        if not attacks:
            raise InputError("version 'custom' needs a list of attacks, e.g. apgd-ce,apgd-t")
        for name in attacks:
            if name not in AA_ATTACKS:
                raise unknown("AutoAttack attack", name, AA_ATTACKS)
        return list(attacks)
    return None


def _model_device(model) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
