"""Catastrophic-overfitting guard for single-step regimes (config section ``guard:``, SPEC §13.5).

Catastrophic overfitting (CO): within an epoch or two, PGD accuracy collapses towards 0% while the
accuracy against the training-style single-step attack (FGSM) holds or rises (Wong et al. 2020;
Kim et al. 2021). Each epoch the trainer measures clean, PGD and FGSM accuracy on its fixed test
subset (model in eval mode; PGD as the per-epoch test, FGSM one step of ε without random start) and
hands the numbers to :func:`check_epoch`. The epoch is a collapse when

    PGD(best good epoch) − PGD(now) > guard.drop                          (Wong: 0.20 absolute)
    and FGSM(now) ≥ FGSM(best good epoch) − guard.fgsm_tolerance          (FGSM holds or rises)

where the *best good epoch* is the epoch with the highest PGD accuracy among those the guard passed
(the latest of equals). Differences from Wong's ``--early-stop`` (the parity reference of SPEC
§13.5, which compares with the previous epoch):

- the reference is the best good epoch, not the previous one: a collapse spread over two or three
  epochs, each below ``drop`` on its own, is still caught (GradAlign's one-layer CNN at 16/255 goes
  PGD 14.4% -> 12.4% -> 5.8% -> 0.3% in epochs 1-4 while FGSM climbs to 66%: no step is 8 points, the
  fall from the best is; docs/BENCHMARKS.md, "Catastrophic overfitting on CPU"), and the
  weights a stop or rollback keeps are the most robust ones seen, not a half-collapsed epoch;
- the probe is the run's fixed test subset in eval mode (Wong: the first augmented training minibatch
  of each epoch in train mode, PGD-5 α=2/255), which makes the numbers comparable across epochs and
  leaves the BatchNorm statistics alone;
- the FGSM condition is added, so that a run whose robustness falls on both attacks (a diverging lr)
  is not called CO.

``guard.drop`` is absolute: Wong's 0.2 suits models whose PGD accuracy is well above 20%; a model that
never gets there (a tiny CIFAR-10 model at a large radius) cannot lose 20 points, and needs a smaller
``drop`` (``configs/cpu/co_cnn_fgsm16.yaml`` uses 0.08 for a model that peaks near 15%).

``guard.policy``:

- ``off``: nothing measured (default);
- ``warn``: the epoch line and ``metrics.csv`` (column ``co``) say so, training goes on;
- ``stop``: as ``warn``, then the run ends after the collapsed epoch; ``best.pt`` holds the best good
  epoch (written at every good epoch that reached the best PGD accuracy so far), ``last.pt`` the
  collapsed weights;
- ``rollback``: as ``stop``, and the model (and EMA) weights are rolled back to the best good epoch
  before ``last.pt`` is written, so the run's final weights are those (Wong keeps the state of the
  last epoch that did not trigger).

The guard's state (the best good epoch and its accuracies, the flagged epochs, the epoch that stopped
the run) is part of :class:`advtrain.train.parts.Progress`, so a resumed run takes the same decisions.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from advtrain.config.check import GUARD_POLICIES  # noqa: F401  (the policies' owner)


def collapsed(good: Dict[str, float], pgd: float, fgsm: float, drop: float, tolerance: float) -> bool:
    """The CO signature against the best good epoch's accuracies ``good`` ({"pgd", "fgsm"})."""
    return good["pgd"] - pgd > drop and fgsm >= good["fgsm"] - tolerance


def check_epoch(state: Optional[Dict[str, Any]], epoch: int, pgd: float, fgsm: float, *, drop: float,
                tolerance: float) -> Dict[str, Any]:
    """The guard's new state after ``epoch`` with test accuracies ``pgd`` and ``fgsm``.

    ``state`` is None before the first evaluated epoch; the result's ``fired`` is True when this
    epoch collapsed; ``good`` is the best good epoch (highest PGD accuracy among the epochs that did
    not collapse, the latest of equals), and ``improved`` says whether this epoch became it.
    """
    state = dict(state or {})
    good = state.get("good")
    fired = good is not None and collapsed(good, pgd, fgsm, drop, tolerance)
    state["fired"] = fired
    state["improved"] = not fired and (good is None or pgd >= good["pgd"])
    if fired:
        state["collapses"] = [*state.get("collapses", []), epoch]
    elif state["improved"]:
        state["good"] = {"epoch": epoch, "pgd": float(pgd), "fgsm": float(fgsm)}
    return state


def message(state: Dict[str, Any], pgd: float, fgsm: float, policy: str) -> str:
    """The epoch line's words for a collapse."""
    g = state["good"]
    action = {"warn": "training goes on", "stop": f"run stopped; best.pt = epoch {g['epoch']}",
              "rollback": f"weights rolled back to epoch {g['epoch']} (best.pt), run stopped"}[policy]
    return (f"CATASTROPHIC OVERFITTING: PGD {100 * g['pgd']:.2f}% (epoch {g['epoch']}) -> {100 * pgd:.2f}% "
            f"while FGSM {100 * g['fgsm']:.2f}% -> {100 * fgsm:.2f}% (guard: {policy}, {action})")


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
            f"flagged, {did}; best good epoch {good.get('epoch', 'none')} (best.pt)")
