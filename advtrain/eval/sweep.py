"""Robustness curves: accuracy against eps (PGD-K with restarts) and the attack-convergence curve.

``advtrain eval ... --eps-sweep 0,1/255,2/255,4/255,8/255,16/255`` runs, for every eps, PGD-K
(``--sweep-steps``, ``--sweep-restarts``, step size 2.5*eps/K as in Madry et al.'s robustness
library) on the evaluation images, and writes beside the card

- ``<name>.eps_sweep.csv``: eps, PGD-K accuracy, and AutoAttack's accuracy at the headline eps
  (taken from the card's own evaluation, not run twice);
- ``<name>.eps_sweep.png`` and ``.svg``: accuracy against eps, ticks at the swept eps, the
  AutoAttack point marked and labelled with the attacks that ran;
- ``<name>.convergence.png`` and ``.svg``: mean cross-entropy per PGD iteration, one line per
  restart (each its own dash pattern and marker), at the headline eps. A curve that climbs and
  flattens is a working attack; one that stays flat or jumps between restarts is the signature of
  gradient masking (Athalye et al., 2018).

PNGs are written at 150 dpi, SVGs beside them for papers; figures are drawn on their own canvas,
never through pyplot, so the user's matplotlib backend is left alone. :func:`masking_check` flags
(``sweep-not-zero``) a sweep whose PGD accuracy stays well above zero at a large eps. The values
and file names go into the sidecar under ``eps_sweep``. An example counts as broken when
any iterate of any restart misclassifies it: every iterate lies in the eps-ball, so it is a valid
adversarial example. The accuracy is taken by the one accuracy loop (:mod:`advtrain.eval.accuracy`)
with the restarts as its attack, which hands back for each example a point that fooled the model
(the first such iterate), else the clean image; the card comes from the one card writer
(``advtrain eval`` commits the sweep's files with it).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advtrain.utils import FIGURE_FORMATS, parse_eps
from advtrain.errors import InputError
from advtrain.utils import format_eps

#: PGD-K of the sweep: K steps of size STEP_FACTOR * eps / K (Madry et al.'s robustness library)
STEP_FACTOR = 2.5


def parse_eps_list(text: str, flag: str = "--eps-sweep") -> List[float]:
    """``"0,1/255,8/255"`` -> sorted distinct floats, each through the one eps parser."""
    items = [t for t in (s.strip() for s in str(text).split(",")) if t]
    if not items:
        raise InputError(f"{flag} {text!r} names no eps; give a list like 0,2/255,4/255,8/255")
    values = sorted({parse_eps(t) for t in items})
    return values


def pgd_restart(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str, steps: int,
                generator_seed: int) -> tuple:
    """One PGD-K run from a random start: ``(broken mask, summed CE per iteration, fooling
    points)``; an example's fooling point is the first iterate that misclassified it (else its
    last iterate).

    The CE sum is taken before each step (iteration 0 is the random start) and after the last.
    """
    from attacks import PGD

    attack = PGD(eps=eps, alpha=STEP_FACTOR * eps / steps, steps=steps, norm=norm)
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):  # caller's RNG untouched
        torch.manual_seed(generator_seed)
        x_adv = attack.initial_point(x)
    losses, broken = [], torch.zeros(len(y), dtype=torch.bool, device=y.device)
    fooling = x_adv.detach().clone()
    for it in range(steps + 1):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x_adv)
            loss = F.cross_entropy(logits, y, reduction="sum")
            grad = None if it == steps else torch.autograd.grad(loss, x_adv)[0]
        losses.append(float(loss.detach()))
        hit = logits.detach().argmax(1) != y
        keep = ~broken  # not fooled before: this iterate is its point so far
        fooling[keep] = x_adv.detach()[keep]
        broken |= hit
        if grad is not None:
            from attacks.base import project

            x_adv = project(x_adv.detach() + attack.alpha * attack.direction(grad), x, eps, norm)
    return broken, losses, fooling


class Restarts:
    """The sweep's attack for the one accuracy loop: on each batch, the clean prediction and
    ``restarts`` PGD-K runs (restart ``r`` of the batch starting at example ``start`` seeded by
    ``seed + 1000 r + start``); returns per example the clean image when it is misclassified,
    else the first iterate that fooled the model, else the clean image. ``curves[r]`` sums the
    mean CE per iteration over the batches."""

    def __init__(self, eps: float, *, norm: str, steps: int, restarts: int, seed: int, n: int):
        self.eps, self.norm, self.steps, self.seed, self.n = eps, norm, steps, seed, n
        self.restarts = restarts if eps > 0 else 0
        self.curves = [[0.0] * (steps + 1) for _ in range(self.restarts)]
        self.start = 0

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            broken = model(x).argmax(1) != y
        point = x.clone()
        for r in range(self.restarts):
            hit, losses, fooling = pgd_restart(model, x, y, self.eps, norm=self.norm,
                                               steps=self.steps,
                                               generator_seed=self.seed + 1000 * r + self.start)
            new = hit & ~broken
            point[new] = fooling[new]
            broken |= hit
            self.curves[r] = [c + v / self.n for c, v in zip(self.curves[r], losses)]
        self.start += len(y)
        return point


def pgd_curve(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str, steps: int,
              restarts: int, batch_size: int, seed: int, device=None) -> tuple:
    """PGD-K accuracy at ``eps`` and the mean CE per iteration for each restart, through the one
    accuracy loop (batches go to the model's device; ``device`` is not used, kept for callers).

    eps = 0 is the clean accuracy (no attack; its loss curve is empty)."""
    from advtrain.eval import accuracy as loop

    attack = Restarts(eps, norm=norm, steps=steps, restarts=restarts, seed=seed, n=len(y))
    hits = loop.correct(model, x, y, batch_size=batch_size, attack=attack)
    return hits.sum().item() / max(len(y), 1), (attack.curves if eps > 0 else [])


def run_sweep(model: nn.Module, x: Tensor, y: Tensor, eps_list: Sequence[float], *, norm: str,
              headline_eps: float, autoattack_acc: Optional[float], steps: int = 20,
              restarts: int = 2, batch_size: int = 500, seed: int = 0, device="cpu",
              log=print, autoattack: Optional[dict] = None) -> dict:
    """Accuracy against eps and the convergence curve at ``headline_eps`` (added if missing)."""
    import time

    eps_all = sorted(set(eps_list) | {headline_eps})
    points, convergence = [], []
    for i, eps in enumerate(eps_all):
        t0 = time.perf_counter()
        acc, curves = pgd_curve(model, x, y, eps, norm=norm, steps=steps, restarts=restarts,
                                batch_size=batch_size, seed=seed)
        point = {"eps": eps, "eps_str": format_eps(eps), "pgd_acc": acc}
        if eps == headline_eps:
            convergence = curves
            point["autoattack_acc"] = autoattack_acc
        points.append(point)
        took = time.perf_counter() - t0
        log(f"eps sweep {i + 1}/{len(eps_all)}: {norm} eps {format_eps(eps)} PGD-{steps}x{restarts}"
            f" {acc:.2%} ({took:.0f}s; ETA {took * (len(eps_all) - i - 1):.0f}s)")
    return {"norm": norm, "attack": f"PGD-{steps}", "steps": steps, "restarts": restarts,
            "step_size": f"{STEP_FACTOR} * eps / {steps}", "n_ex": len(y), "seed": seed,
            "headline_eps": headline_eps, "points": points, "autoattack": autoattack,
            "convergence": {"eps": headline_eps, "loss_per_iteration": convergence}}


#: the sanity check of a sweep: at an eps at least LARGE_EPS_FACTOR times the evaluated one, PGD
#: accuracy above MASKING_ACC (absolute) and above MASKING_OF_CLEAN of the clean accuracy is flagged
LARGE_EPS_FACTOR, MASKING_ACC, MASKING_OF_CLEAN = 4, 0.05, 0.10


def masking_check(sweep: dict) -> tuple:
    """``(record, flags)``: does PGD accuracy fall (near) zero at the largest swept eps?

    Any image can be turned into another class by a large enough perturbation, so accuracy that
    stays well above zero at a large eps is a sign of gradient masking (Carlini et al., 2019,
    "On Evaluating Adversarial Robustness", section 5): flagged ``sweep-not-zero`` when the largest
    eps is at least ``LARGE_EPS_FACTOR`` x the evaluated eps and its PGD accuracy is above both
    ``MASKING_ACC`` and ``MASKING_OF_CLEAN`` x the clean accuracy (eps 0, or the clean accuracy
    the caller measured). A sweep that does not reach that eps is recorded as not checked."""
    from advtrain.eval.sanity import flag

    pts = sweep["points"]
    last, head = pts[-1], sweep["headline_eps"]
    clean = next((p["pgd_acc"] for p in pts if p["eps"] == 0), sweep.get("clean_acc"))
    limit = max(MASKING_ACC, MASKING_OF_CLEAN * (clean if clean is not None else 1.0))
    if head <= 0 or last["eps"] < LARGE_EPS_FACTOR * head:
        return {"checked": False, "why": f"largest eps {last['eps_str']} is below "
                f"{LARGE_EPS_FACTOR} x the evaluated eps {format_eps(head)}; sweep further to check "
                "that PGD accuracy falls to zero"}, []
    record = {"checked": True, "eps": last["eps_str"], "pgd_acc": last["pgd_acc"], "limit": limit}
    if last["pgd_acc"] <= limit:
        return record, []
    return record, [flag("sweep-not-zero", f"PGD accuracy {last['pgd_acc']:.2%} at {sweep['norm']} "
                         f"eps {last['eps_str']} ({last['eps'] / head:.3g} x the evaluated eps) stays "
                         f"above {limit:.2%}: a sign of gradient masking; run an adaptive "
                         "evaluation")]


#: the files of a sweep beside the card ``<stem>.json``, in the order of :data:`FILE_KINDS`
SWEEP_SUFFIXES = (".eps_sweep.csv",) + tuple(f".{kind}.{fmt}" for kind in ("eps_sweep", "convergence")
                                              for fmt in FIGURE_FORMATS)


def sweep_paths(stem) -> tuple:
    """The paths ``sweep_files`` writes for the card ``<stem>.json`` (known before the sweep runs,
    so the command checks them with its other outputs), in the order of :data:`FILE_KINDS`."""
    stem = Path(stem)
    return tuple(str(stem.with_name(stem.name + s)) for s in SWEEP_SUFFIXES)


def sweep_files(sweep: dict, stem) -> dict:
    """``{path: bytes}`` of ``<stem>.eps_sweep.csv``, ``.eps_sweep.png``/``.svg`` and
    ``.convergence.png``/``.svg``: the caller commits them with the card and its sidecar as one
    output (all or none). PNGs at :data:`advtrain.utils.FIGURE_DPI`, SVGs for papers."""
    from advtrain.utils import figure_bytes

    stem = Path(stem)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["eps", "eps_str", "pgd_acc", "autoattack_acc"])
    for p in sweep["points"]:
        aa = p.get("autoattack_acc")
        writer.writerow([f"{p['eps']:.8g}", p["eps_str"], f"{p['pgd_acc']:.6f}",
                         "" if aa is None else f"{aa:.6f}"])
    figures = [figure_bytes(fig, fmt) for fig in (plot_accuracy(sweep), plot_convergence(sweep))
               for fmt in FIGURE_FORMATS]  # the order of SWEEP_SUFFIXES / FILE_KINDS
    return dict(zip(sweep_paths(stem), [buf.getvalue().encode("utf-8"), *figures]))


#: file kinds of :func:`sweep_files` in the sidecar's ``eps_sweep.files`` (same order)
FILE_KINDS = ("csv", "png", "svg", "convergence_png", "convergence_svg")


def autoattack_label(sweep: dict) -> str:
    """``AutoAttack custom (apgd-ce, apgd-t)``: the attacks that actually ran."""
    aa = sweep.get("autoattack") or {}
    attacks = aa.get("attacks") or []
    version = aa.get("version")
    what = "AutoAttack" + (f" {version}" if version else "")
    return what + (f" ({', '.join(attacks)})" if attacks else "")


def plot_accuracy(sweep: dict):
    """Accuracy (%) against eps, ticks at the swept eps (labelled as the card writes them), the PGD
    line and the AutoAttack point labelled with the attacks that ran."""
    from advtrain.utils import new_figure

    scale, unit = (255, "Linf eps") if sweep["norm"] == "Linf" else (1, f"{sweep['norm']} eps")
    fig = new_figure()
    ax = fig.add_subplot()
    pts = sweep["points"]
    xs = [p["eps"] * scale for p in pts]
    ax.plot(xs, [100 * p["pgd_acc"] for p in pts], marker="o",
            label=f"{sweep['attack']}, {sweep['restarts']} restart"
                  + ("s" if sweep["restarts"] != 1 else ""))
    aa = [p for p in pts if p.get("autoattack_acc") is not None]
    if aa:
        ax.plot([p["eps"] * scale for p in aa], [100 * p["autoattack_acc"] for p in aa], "r*",
                markersize=11, linestyle="none", label=autoattack_label(sweep))
    ax.set_xticks(xs)
    ax.set_xticklabels([p["eps_str"] for p in pts], rotation=45 if len(pts) > 5 else 0,
                       fontsize=7)
    ax.set_xlabel(unit)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{sweep['norm']} robustness curve, n={sweep['n_ex']}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


#: line styles and markers of the restarts, so that overlapping restarts stay distinguishable
RESTART_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


def plot_convergence(sweep: dict):
    """Mean CE per PGD iteration, one line per restart, each with its own dash pattern and marker
    (flat or erratic: gradient masking)."""
    from advtrain.utils import new_figure

    conv = sweep["convergence"]
    fig = new_figure()
    ax = fig.add_subplot()
    curves = conv["loss_per_iteration"]
    for r, curve in enumerate(curves):
        style, marker = RESTART_STYLES[r % len(RESTART_STYLES)]
        every = max(1, len(curve) // 8)
        ax.plot(range(len(curve)), curve, linestyle=style, marker=marker, markersize=4,
                markevery=(r % every, every), alpha=0.85, label=f"restart {r + 1}")
    ax.set_xlabel("PGD iteration")
    ax.set_ylabel("mean cross-entropy")
    ax.set_title(f"{sweep['attack']} convergence, {sweep['norm']} eps {format_eps(conv['eps'])}",
                 fontsize=9)
    if curves:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
