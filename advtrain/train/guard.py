"""Catastrophic-overfitting guard for single-step regimes (config section ``guard:``, SPEC §13.5).

Catastrophic overfitting (CO): within an epoch or two, PGD accuracy collapses towards 0% while the
accuracy against the training-style single-step attack (FGSM) holds or rises (Wong et al. 2020;
Kim et al. 2021). Each epoch the trainer measures clean, PGD and FGSM accuracy on its fixed test
subset (model in eval mode; PGD as the per-epoch test, FGSM one step of ε without random start) and
hands the numbers to :func:`check_epoch`. The epoch is a collapse when

    PGD(previous good epoch) − PGD(now) > guard.drop                      (Wong: 0.20 absolute)
    and FGSM(now) ≥ FGSM(previous good epoch) − guard.fgsm_tolerance     (FGSM holds or rises)

Differences from Wong's ``--early-stop`` (the parity reference of SPEC §13.5): the probe is the run's
fixed test subset in eval mode (Wong: the first augmented training minibatch of each epoch in train
mode, PGD-5 α=2/255), which makes the numbers comparable across epochs and leaves the BatchNorm
statistics alone; and the FGSM condition is added, so that a run whose robustness falls on both
attacks (a diverging lr) is not called CO.

``guard.policy``:

- ``off``: nothing measured (default);
- ``warn``: the epoch line and ``metrics.csv`` (column ``co``) say so, training goes on;
- ``stop``: as ``warn``, then the run ends after the collapsed epoch; ``best.pt`` holds the last good
  epoch (written at every epoch that passed the guard), ``last.pt`` the collapsed weights;
- ``rollback``: as ``stop``, and the model (and EMA) weights are rolled back to the last good epoch
  before ``last.pt`` is written, so the run's final weights are the last good ones (Wong saves the
  state of the last epoch that did not trigger).

The guard's state (last good epoch and its accuracies, the epoch that stopped the run) is part of
:class:`advtrain.train.parts.Progress`, so a resumed run takes the same decisions.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from advtrain.config.check import GUARD_POLICIES  # noqa: F401  (the policies' owner)


def collapsed(good: Dict[str, float], pgd: float, fgsm: float, drop: float, tolerance: float) -> bool:
    """The CO signature against the last good epoch's accuracies ``good`` ({"pgd", "fgsm"})."""
    return good["pgd"] - pgd > drop and fgsm >= good["fgsm"] - tolerance


def check_epoch(state: Optional[Dict[str, Any]], epoch: int, pgd: float, fgsm: float, *, drop: float,
                tolerance: float) -> Dict[str, Any]:
    """The guard's new state after ``epoch`` with test accuracies ``pgd`` and ``fgsm``.

    ``state`` is None before the first evaluated epoch; the result's ``fired`` is True when this
    epoch collapsed (then ``good`` stays the last good epoch's), else this epoch becomes ``good``.
    """
    state = dict(state or {})
    good = state.get("good")
    fired = good is not None and collapsed(good, pgd, fgsm, drop, tolerance)
    state["fired"] = fired
    if fired:
        state.setdefault("collapses", []).append(epoch)
    else:
        state["good"] = {"epoch": epoch, "pgd": float(pgd), "fgsm": float(fgsm)}
    return state


def message(state: Dict[str, Any], pgd: float, fgsm: float, policy: str) -> str:
    """The epoch line's words for a collapse."""
    g = state["good"]
    action = {"warn": "training goes on", "stop": f"run stopped; best.pt = epoch {g['epoch']}",
              "rollback": f"weights rolled back to epoch {g['epoch']} (best.pt), run stopped"}[policy]
    return (f"CATASTROPHIC OVERFITTING: PGD {100 * g['pgd']:.2f}% -> {100 * pgd:.2f}% while FGSM "
            f"{100 * g['fgsm']:.2f}% -> {100 * fgsm:.2f}% (guard: {policy}, {action})")


def summary_line(state: Optional[Dict[str, Any]], policy: str) -> str:
    """The run summary's line on the guard: the epochs it flagged and what it did, or that no epoch
    was flagged (empty when the guard was off)."""
    if policy == "off":
        return ""
    flagged = (state or {}).get("collapses") or []
    if not flagged:
        return f"catastrophic-overfitting guard ({policy}): no epoch flagged"
    good = (state or {}).get("good") or {}
    did = {"warn": "training went on", "stop": "run stopped",
           "rollback": "weights rolled back, run stopped"}[policy]
    return (f"catastrophic-overfitting guard ({policy}): epoch(s) {', '.join(map(str, flagged))} "
            f"flagged, {did}; last good epoch {good.get('epoch', 'none')} (best.pt)")
