"""Sanity report for a robustness evaluation: signs that an accuracy number cannot be trusted.

Each finding is a *flag* ``{"code", "message", "doc"}``; every code has an entry in
``docs/FLAGS.md`` saying what it means and what to do. :func:`run_sanity` runs the cheap model
checks on a subset (default 100 examples); :func:`evaluation_flags` turns the numbers of a
finished evaluation into flags.

Checks (``x`` in [0,1], ``f`` the model):

- ``train-mode``: the model was handed over in train mode (BN/dropout make ``f`` batch dependent).
- ``probability-outputs``: every row of ``f(x)`` lies in [0,1] and sums to 1 (softmax, not logits).
- ``randomized-model``: two forwards of the same batch differ, ``max|f(x) - f(x)| > tol``.
- ``eps0-mismatch``: PGD with eps = 0 changes accuracy (acc(eps=0) != clean acc).
- ``pgd-not-converged``: PGD-2K or a restarted PGD-K beats PGD-K by more than a margin.
- ``robust-above-clean``: robust acc > clean acc.
- ``outside-eps-ball``: some x_adv has ``||x_adv - x||_p > eps`` or leaves [0,1].
- ``square-beats-whitebox``: the black-box Square lowers accuracy after the white-box attacks.
- ``autoattack-check``: a warning raised by AutoAttack's own checks (captured verbatim).
- ``non-finite-logits``: ``f(x)`` has NaN/Inf entries on the evaluated images; every accuracy is
  meaningless, so :func:`advtrain.eval.cards.write_card` refuses to write a card (:data:`BLOCKING`).
- ``eval-on-train-images``, ``trained-on-test-images``, ``partial-classes``: where the images came
  from (``advtrain eval`` compares its data with what the checkpoint recorded; issue 16.7).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from advtrain.eval import accuracy as loop  # the one accuracy loop

DOC = "docs/FLAGS.md"

#: every flag code this module can emit, in docs/FLAGS.md order
CODES = ("train-mode", "probability-outputs", "randomized-model", "eps0-mismatch",
         "pgd-not-converged", "robust-above-clean", "outside-eps-ball", "square-beats-whitebox",
         "autoattack-check", "precision-gap", "non-finite-logits", "eval-on-train-images",
         "trained-on-test-images", "partial-classes", "sweep-not-zero")

#: flags about where the images came from, not about the attack (they do not set a card's
#: ``unreliable``, which in RobustBench means "the attack may overestimate robustness")
DATA_FLAGS = ("eval-on-train-images", "trained-on-test-images", "partial-classes")

#: flags that make the numbers meaningless: no card is written for a result carrying one
BLOCKING = ("non-finite-logits",)

#: flags that say the attacks may have been fooled (masked gradients, randomness): the sanity
#: report then suggests an adaptive evaluation (:func:`suggest_adaptive`)
ADAPTIVE = ("randomized-model", "eps0-mismatch", "pgd-not-converged", "square-beats-whitebox",
            "autoattack-check", "robust-above-clean", "sweep-not-zero")


def suggest_adaptive(flags: Sequence[dict]) -> Optional[str]:
    """One line suggesting an adaptive evaluation when a flag of :data:`ADAPTIVE` fired, else None
    (see docs/FLAGS.md#adaptive-evaluations)."""
    codes = list(dict.fromkeys(f.get("code") for f in flags if f.get("code") in ADAPTIVE))
    if not codes:
        return None
    how = ("re-evaluate with --version rand (EOT over the model's randomness), then "
           if "randomized-model" in codes else "")
    return (f"{', '.join(codes)}: AutoAttack may overestimate robustness here; {how}run an "
            "adaptive attack tailored to the defense (BPDA for non-differentiable parts, EOT for "
            "randomness, transfer from an undefended twin) and record it on the card with "
            "--external-attack NAME --external-acc PERCENT --external-source URL, or later with "
            "advtrain external CARD --attack NAME --acc PERCENT --source URL (see "
            f"{DOC}#adaptive-evaluations)")

#: flags that say the attack may have failed (robustness overestimated)
ATTACK_DOUBTS = ("pgd-not-converged", "square-beats-whitebox", "autoattack-check")
#: robust accuracy up to which a model that was not adversarially trained is where it should be
STANDARD_MODEL_ROBUST = 0.01


def flag(code: str, message: str) -> dict:
    """A flag record pointing at its ``docs/FLAGS.md`` entry."""
    if code not in CODES:
        raise ValueError(f"unknown flag code {code!r}")
    return {"code": code, "message": message, "doc": f"{DOC}#{code}"}


@torch.no_grad()
def _forward(model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def check_probability_outputs(logits: torch.Tensor, tol: float = 1e-5) -> list:
    """Flag outputs that look like probabilities: all in [0,1] and rows summing to 1."""
    in_range = bool(logits.min() >= -tol) and bool(logits.max() <= 1 + tol)
    sums_to_one = bool(((logits.sum(-1) - 1).abs() < tol * logits.shape[-1]).all())
    if in_range and sums_to_one:
        return [flag("probability-outputs", "model outputs look like probabilities (rows in [0,1] "
                     "summing to 1); AutoAttack needs logits: remove the final softmax")]
    return []


def check_finite_logits(n_bad: int, n: int) -> list:
    """Flag a model whose logits hold NaN/Inf on ``n_bad`` of the ``n`` evaluated images."""
    if n_bad:
        return [flag("non-finite-logits", f"the model's logits are NaN/Inf on {n_bad} of {n} "
                     "images; its accuracies are meaningless (overflowing or corrupt weights): "
                     "check the checkpoint and the model's forward pass")]
    return []


def check_randomness(model, x: torch.Tensor, batch_size: int, tol: float = 1e-5) -> list:
    """Flag a model whose outputs differ between two forwards of the same input (eval mode)."""
    diff = (_forward(model, x, batch_size) - _forward(model, x, batch_size)).abs().max().item()
    if diff > tol:
        return [flag("randomized-model", f"two forwards of the same batch differ (max |diff| = "
                     f"{diff:.3g}); a randomized defense needs --version rand (EOT)")]
    return []


def _attack_correct(model, attack: Callable, x, y, batch_size: int) -> torch.Tensor:
    """Per-example bool: still classified correctly after ``attack`` (the one accuracy loop)."""
    return loop.correct(model, x, y, batch_size=batch_size, attack=attack)


def _attack_acc(model, attack: Callable, x, y, batch_size: int) -> float:
    return _attack_correct(model, attack, x, y, batch_size).float().mean().item()


def check_eps_zero(model, x, y, clean_acc: float, make_pgd: Callable, batch_size: int) -> tuple:
    """acc under PGD with eps = 0 must equal clean acc; returns (acc, flags)."""
    acc = _attack_acc(model, make_pgd(0.0, 2), x, y, batch_size)
    if abs(acc - clean_acc) > 1e-9:
        return acc, [flag("eps0-mismatch", f"accuracy under an eps=0 attack is {acc:.2%} but "
                          f"clean accuracy is {clean_acc:.2%} on the same images; the model is "
                          "input-batch dependent or random")]
    return acc, []


def check_pgd_convergence(model, x, y, eps: float, steps: int, make_pgd: Callable,
                          batch_size: int, margin: float = 0.03) -> tuple:
    """More steps or a restart must not help much.

    With c_K(i) = 1[PGD-K leaves x_i correct]: flag when acc(PGD-2K) < acc(PGD-K) - margin or
    mean_i c_K(i)·c_K'(i) (a second random start) < acc(PGD-K) - margin.
    Returns ({"pgd-K", "pgd-2K", "pgd-Kx2"}: accuracies, flags).
    """
    first = _attack_correct(model, make_pgd(eps, steps), x, y, batch_size)
    second = _attack_correct(model, make_pgd(eps, steps), x, y, batch_size)
    acc_k, acc_r = first.float().mean().item(), (first & second).float().mean().item()
    acc_2k = _attack_acc(model, make_pgd(eps, 2 * steps), x, y, batch_size)
    accs = {f"pgd-{steps}": acc_k, f"pgd-{2 * steps}": acc_2k, f"pgd-{steps}x2": acc_r}
    worst, label = min((acc_2k, f"PGD-{2 * steps}"), (acc_r, f"PGD-{steps} with a restart"))
    if worst < acc_k - margin:
        return accs, [flag("pgd-not-converged", f"{label} accuracy {worst:.2%} is below "
                           f"PGD-{steps} {acc_k:.2%} by more than {margin:.0%}: the attack has not "
                           "converged, a sign of gradient masking")]
    return accs, []


def run_sanity(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, make_pgd: Callable,
               was_training: bool = False, n: int = 100, pgd_steps: int = 10,
               batch_size: int = 500, margin: float = 0.03) -> tuple:
    """Cheap model checks on the first ``n`` examples (model already in eval mode).

    ``make_pgd(eps, steps)`` returns an attack called as ``attack(model, x, y)``.
    Returns ``(sanity: dict, flags: list)``.
    """
    x, y = x[:n], y[:n]
    flags = []
    if was_training:
        flags.append(flag("train-mode", "the model was in train mode; it was evaluated in eval "
                          "mode and restored; call model.eval() yourself to silence this"))
    seen = []  # the clean logits, for the probability check
    clean_acc = loop.correct(model, x, y, batch_size=batch_size,
                             on_logits=seen.append).float().mean().item()
    logits = torch.cat(seen)
    flags += check_probability_outputs(logits)
    flags += check_randomness(model, x, batch_size)
    acc0, f0 = check_eps_zero(model, x, y, clean_acc, make_pgd, batch_size)
    accs, f1 = check_pgd_convergence(model, x, y, eps, pgd_steps, make_pgd, batch_size, margin)
    sanity = {"n": len(x), "clean_acc": clean_acc, "eps0_acc": acc0, "pgd": accs,
              "was_training": was_training, "margin": margin}
    return sanity, flags + f0 + f1


def verify_ball(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str,
                tol: float = 1e-5) -> tuple:
    """Check every ``x_adv`` lies in the ``norm`` ball of radius eps around x and in [0,1].

    Returns ``({"max_dist", "n_outside", "n_out_of_range"}, flags)``.
    """
    from attacks.base import flat_norm, rounding_slack

    delta = (x_adv - x).reshape(len(x), -1).double()
    dist = flat_norm(delta, norm)
    slack = rounding_slack(norm, delta.shape[1], x_adv.dtype) if len(x) else 0.0
    outside = int((dist > eps + tol + slack).sum())
    out_of_range = int(((x_adv < -tol) | (x_adv > 1 + tol)).reshape(len(x), -1).any(1).sum())
    report = {"max_dist": float(dist.max()) if len(dist) else 0.0, "n_outside": outside,
              "n_out_of_range": out_of_range}
    flags = []
    if outside or out_of_range:
        flags.append(flag("outside-eps-ball", f"{outside} adversarial examples exceed {norm} eps "
                          f"{eps:.6g} (max {report['max_dist']:.6g}) and {out_of_range} leave "
                          "[0,1]; the robust accuracy is invalid"))
    return report, flags


def evaluation_flags(clean_acc: float, robust_acc: float, per_attack: dict,
                     aa_checks: Sequence[str] = (), alpha: float = 0.002,
                     counts: Optional[tuple] = None) -> list:
    """Flags from a finished evaluation's numbers (robust <= clean, Square, AA's own checks).

    ``counts = (clean_correct, robust_correct)``, when given, decides robust-above-clean exactly
    (two accuracies of the same count computed in float32 and float64 differ by ~1e-8)."""
    flags = [flag("autoattack-check", str(msg)) for msg in aa_checks]
    above = counts[1] > counts[0] if counts is not None else robust_acc > clean_acc + 1e-12
    if above:
        flags.append(flag("robust-above-clean", f"robust accuracy {robust_acc:.2%} exceeds clean "
                          f"accuracy {clean_acc:.2%}; the model or the evaluation is inconsistent"))
    white = [v for k, v in per_attack.items() if k not in ("clean", "square")]
    if "square" in per_attack and white and per_attack["square"] < min(white) - alpha:
        flags.append(flag("square-beats-whitebox", f"Square lowered robust accuracy from "
                          f"{min(white):.2%} to {per_attack['square']:.2%} after the white-box "
                          "attacks: gradients are likely masked; use adaptive attacks"))
    return flags


def standard_model(flags: list, robust_acc: float, training: Optional[dict]) -> list:
    """A model the checkpoint says was not adversarially trained (training attack ``none``) and
    whose robust accuracy is near zero (<= 1%) is where it should be: the attack did its job. Flags
    that doubt the attack (:data:`ATTACK_DOUBTS`, e.g. AutoAttack's zero-gradient warning on the
    saturated logits of a confident clean model) are kept, each with an ``expected`` note, and no
    longer make the card ``unreliable`` (:func:`advtrain.eval.cards.card_fields`)."""
    if not training or training.get("adversarially_trained", True) or robust_acc > STANDARD_MODEL_ROBUST:
        return flags
    note = (f"standard (not adversarially trained) model at {robust_acc:.2%} robust accuracy: "
            "the attack succeeded; this is not an attack failure")
    return [dict(f, expected=note) if f.get("code") in ATTACK_DOUBTS else f for f in flags]
