"""What a training run shows: per-epoch metric rows, ``metrics.csv``, ``curves.png``, paper summary.

``metrics.csv`` has one row per epoch: epoch, lr, eps_t, step_size, steps, every loss term of the
objective (epoch means), ``acc_adv`` (train adversarial accuracy), ``test_clean`` and ``test_pgd``
(fixed test subset; empty in epochs without evaluation), with the catastrophic-overfitting guard on
``test_fgsm`` (FGSM accuracy on that subset) and ``co`` (1 in an epoch the guard called a collapse,
else 0), the same for the EMA weights when EMA is on
(``test_clean_ema``, ``test_pgd_ema``), on a ``data.train_list`` the long-tail groups' clean
accuracies (``test_many``, ``test_medium``, ``test_few``, :func:`shot_accuracy`), the held-out images' ``holdout_clean`` / ``holdout_pgd`` and the
epoch of ``best.pt`` (``best_epoch``) when ``data.holdout`` > 0, ``seconds`` and ``skipped_batches``.
``PAPER_ROWS`` holds the reported clean / AutoAttack accuracies of SPEC section 7 (rows 1-13, AA-log
or RobustBench values) and of the baselines the paper compares with (rows 14-18), keyed by the
config's ``paper_row``.
"""
from __future__ import annotations

import io
import os
from typing import Dict, List, Optional, Sequence

from advtrain.config.paper_rows import PAPER_ROWS
from advtrain.io.atomic import atomic_write_text

FIRST = ["epoch", "lr", "eps_t", "step_size", "steps"]
LAST = ["acc_adv", "test_clean", "test_pgd", "test_fgsm", "co", "test_clean_ema", "test_pgd_ema", "holdout_clean",
        "holdout_pgd", "best_epoch", "seconds", "skipped_batches"]
#: clean test-subset accuracy of the long-tail groups (runs on a data.train_list; mean per-class
#: accuracy of the classes with > 100, 20-100, < 20 training images), after test_clean when present
SHOTS = ["test_many", "test_medium", "test_few"]


def columns(rows: List[dict]) -> List[str]:
    """Fixed columns first, then every loss term in order of appearance, then the accuracies."""
    terms = []
    for row in rows:
        terms += [k for k in row if k not in FIRST + LAST + SHOTS and k not in terms]
    shots = SHOTS if any(k in row for row in rows for k in SHOTS) else []
    at = LAST.index("test_pgd") + 1
    return FIRST + terms + LAST[:at] + shots + LAST[at:]


def shot_accuracy(pred, y, counts: Sequence[int]) -> Dict[str, Optional[float]]:
    """``{test_many, test_medium, test_few}``: each group's mean of the per-class accuracies of
    ``pred`` against ``y`` over the classes of the group present in ``y`` (None: no such class);
    groups by ``counts`` (training images per class, :func:`advtrain.data.imagefolder.shot_group`)."""
    from advtrain.data.imagefolder import shot_group

    per_group: Dict[str, List[float]] = {"many": [], "medium": [], "few": []}
    correct = (pred == y).tolist()
    hits: Dict[int, List[int]] = {}
    for label, ok in zip(y.tolist(), correct):
        hits.setdefault(int(label), [0, 0])
        hits[int(label)][0] += int(ok)
        hits[int(label)][1] += 1
    for label, (good, total) in sorted(hits.items()):
        per_group[shot_group(counts[label])].append(good / total)
    return {f"test_{g}": (sum(v) / len(v) if v else None) for g, v in per_group.items()}


def counts_line(counts: Sequence[int]) -> str:
    """One line on the training list's per-class image counts and long-tail groups."""
    from advtrain.data.imagefolder import SHOT_FEW, SHOT_MANY, shot_group

    groups = [shot_group(c) for c in counts]
    return (f"training list: {sum(counts)} images in {len(counts)} classes ({min(counts)} to "
            f"{max(counts)} per class): {groups.count('many')} many-shot (> {SHOT_MANY} images), "
            f"{groups.count('medium')} medium-shot, {groups.count('few')} few-shot (< {SHOT_FEW}); "
            "per class in class_counts.csv")


def write_class_counts(counts: Sequence[int], path: str) -> None:
    """``class_counts.csv``: label, training images, long-tail group (atomic)."""
    from advtrain.data.imagefolder import shot_group

    lines = ["label,train_images,group"] + [f"{k},{c},{shot_group(c)}" for k, c in enumerate(counts)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_csv(rows: List[dict], path: str) -> None:
    """``metrics.csv`` (atomic)."""
    import csv

    cols = columns(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in cols})
    atomic_write_text(path, buf.getvalue())


def plot_curves(rows: List[dict], path: str, trace: Sequence[Sequence[float]] = ()) -> None:
    """``curves.png`` and ``curves.svg`` beside it (:data:`advtrain.utils.FIGURE_FORMATS`): loss, accuracies (percent, as printed), lr and eps_t (x255) against the epoch.

    ``trace`` rows (:data:`advtrain.train.parts.TRACE`: step, fractional epoch, loss, acc_adv, lr, eps_t;
    means over a few steps) give the per-step points; the per-epoch values are drawn over them."""
    from advtrain.io.atomic import commit_files
    from advtrain.utils import FIGURE_FORMATS, figure_bytes, new_figure

    ep = [r["epoch"] for r in rows]
    fig = new_figure(figsize=(13, 3.6))  # its own canvas: the user's matplotlib backend is untouched
    axes = fig.subplots(1, 3)
    at = [t[1] for t in trace]
    if trace:
        axes[0].plot(at, [t[2] for t in trace], lw=0.8, alpha=0.6, label="train loss (steps)")
        axes[1].plot(at, [100 * t[3] for t in trace], lw=0.8, alpha=0.6, label="train adv (steps)")
    axes[0].plot(ep, [r.get("loss") for r in rows], marker="o", label="train loss (epoch mean)")
    axes[0].set_title("loss")
    for key, label in (("acc_adv", "train adv"), ("test_clean", "test clean"), ("test_pgd", "test PGD"),
                       ("test_clean_ema", "EMA clean"), ("test_pgd_ema", "EMA PGD"),
                       ("holdout_pgd", "held-out PGD")):
        pts = [(r["epoch"], 100 * float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=label)
    axes[1].set_title("accuracy (%)")
    lr_x, lr_y = (at, [t[4] for t in trace]) if trace else (ep, [r["lr"] for r in rows])
    eps_y = [255 * t[5] for t in trace] if trace else [255 * r["eps_t"] for r in rows]
    lines = axes[2].plot(lr_x, lr_y, marker="." if not trace else None, label="lr (left)")
    ax2 = axes[2].twinx()
    lines += ax2.plot(lr_x, eps_y, color="tab:red", ls="--", label="eps_t x 255 (right)")
    axes[2].set_title("lr / eps_t x 255")
    axes[2].legend(lines, [ln.get_label() for ln in lines], fontsize=8)
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    stem = os.path.splitext(path)[0]
    commit_files({f"{stem}.{fmt}": figure_bytes(fig, fmt) for fmt in FIGURE_FORMATS}, path)


def summary_text(rows: List[dict], paper_row: Optional[int], subset: str = "test subset") -> str:
    """The end-of-run summary: :func:`summary`'s table, or, when no epoch was tested
    (``data.test_subset: 0``), one line saying so and how to evaluate (never a table of None)."""
    if not any(r.get("test_clean") not in (None, "") for r in rows):
        return ("no per-epoch test (data.test_subset: 0, or eval.every skipped every epoch): "
                "evaluate the run with advtrain eval RUN_DIR/last.pt --dataset ...")
    return summary(rows, paper_row, subset).to_string()


def threads_line() -> str:
    """Threads and CPU kind of the run: results are bit-reproducible for these (another thread
    count or CPU instruction set can change float rounding and so the numbers)."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine() or "unknown CPU"
    return (f"threads: {torch.get_num_threads()} intra-op (torch.get_num_threads), CPU {cpu}, "
            f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}; a rerun is "
            "bit-identical with the same thread count and CPU kind")


def summary(rows: List[dict], paper_row: Optional[int], subset: str = "test subset"):
    """pandas table: this run's last test accuracies (percent, on ``subset``, e.g. "test subset of
    1000 images") next to the paper's numbers for its row."""
    import pandas as pd

    evaluated = [r for r in rows if r.get("test_clean") not in (None, "")]
    last = evaluated[-1] if evaluated else {}
    setting, clean, aa = PAPER_ROWS.get(paper_row, ("no paper row", None, None))
    pct = (lambda v: None if v in (None, "") else round(100.0 * float(v), 2))
    columns = {"this run": [pct(last.get("test_clean")), pct(last.get("test_pgd"))]}
    if last.get("test_clean_ema") not in (None, ""):
        columns["this run (EMA)"] = [pct(last.get("test_clean_ema")), pct(last.get("test_pgd_ema"))]
    if paper_row in PAPER_ROWS:
        columns[f"paper (row {paper_row}: {setting})"] = [clean, aa]
        robust = f"robust % (run: PGD on the {subset}; paper: AutoAttack, full test set)"
    else:  # no paper number to compare with: show the run alone
        robust = f"robust % (PGD on the {subset})"
    table = pd.DataFrame(columns, index=[f"clean % ({subset})", robust])
    return table
