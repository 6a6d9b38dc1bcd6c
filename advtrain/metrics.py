"""What a training run shows: per-epoch metric rows, ``metrics.csv``, ``curves.png``, paper summary.

``metrics.csv`` has one row per epoch: epoch, lr, eps_t, step_size, steps, every loss term of the
objective (epoch means), ``acc_adv`` (train adversarial accuracy), ``test_clean`` and ``test_pgd``
(fixed test subset; empty in epochs without evaluation), the same for the EMA weights when EMA is on
(``test_clean_ema``, ``test_pgd_ema``), the held-out images' ``holdout_clean`` / ``holdout_pgd`` and the
epoch of ``best.pt`` (``best_epoch``) when ``data.holdout`` > 0, ``seconds`` and ``skipped_batches``.
``PAPER_ROWS`` holds the reported clean / AutoAttack accuracies of SPEC section 7 (rows 1-13, AA-log
or RobustBench values) and of the baselines the paper compares with (rows 14-18), keyed by the
config's ``paper_row``.
"""
from __future__ import annotations

import io
import os
from typing import Dict, List, Optional

from advtrain.atomic import atomic_write_text

#: paper_row -> (setting, clean %, AutoAttack %); None where the paper reports no number
PAPER_ROWS: Dict[int, tuple] = {
    1: ("IKL-AT CIFAR-10 WRN-34-10", 85.31, 57.09),
    2: ("IKL-AT CIFAR-100 WRN-34-10 (a3 b20 T4)", 66.51, 31.43),
    3: ("IKL-AT CIFAR-100 WRN-34-10 (a4 b20 T2)", 64.08, 31.65),
    4: ("GKL-AT CIFAR-100 WRN-34-10", 65.76, 31.91),
    5: ("IKL-AT CIFAR-100 WRN-34-10 AutoAugment", 65.93, 32.52),
    6: ("IKL-AT CIFAR-10 + 1M EDM WRN-28-10", 90.75, 63.54),
    7: ("IKL-AT CIFAR-10 + 20M EDM WRN-28-10", 92.16, 67.73),
    8: ("IKL-AT CIFAR-100 + 1M EDM WRN-28-10", 68.99, 35.89),
    9: ("IKL-AT CIFAR-100 + 50M EDM WRN-28-10", 73.85, 39.18),
    10: ("GKL-AT CIFAR-100 + 50M EDM WRN-28-10", 73.65, 39.37),
    11: ("GKL-AT CIFAR-100 gamma 0.4 (v2 script)", None, None),
    12: ("GKL-AT CIFAR-10 gamma 0.2 (v2 script)", None, None),
    13: ("GKL-AT CIFAR-10 AutoAugment (v2 script)", None, None),
    14: ("TRADES-AWP CIFAR-100 WRN-34-10", 60.38, 28.86),
    15: ("LBGAT beta 0 CIFAR-100 WRN-34-10 (eps 0.031)", 70.25, 27.16),
    16: ("LBGAT beta 6 CIFAR-100 WRN-34-10 (eps 0.031)", 60.64, 29.33),
    17: ("LBGAT beta 9 + AWP CIFAR-100 WRN-34-10", 62.99, 31.20),
    18: ("TRADES-AWP CIFAR-10 WRN-34-10", 85.36, 56.17),
}

FIRST = ["epoch", "lr", "eps_t", "step_size", "steps"]
LAST = ["acc_adv", "test_clean", "test_pgd", "test_clean_ema", "test_pgd_ema", "holdout_clean",
        "holdout_pgd", "best_epoch", "seconds", "skipped_batches"]


def columns(rows: List[dict]) -> List[str]:
    """Fixed columns first, then every loss term in order of appearance, then the accuracies."""
    terms = []
    for row in rows:
        terms += [k for k in row if k not in FIRST + LAST and k not in terms]
    return FIRST + terms + LAST


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


def plot_curves(rows: List[dict], path: str) -> None:
    """``curves.png``: training loss, train adversarial and test accuracies, lr and eps_t per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(ep, [r.get("loss") for r in rows], marker="o", label="train loss")
    axes[0].set_title("loss")
    for key, label in (("acc_adv", "train adv"), ("test_clean", "test clean"), ("test_pgd", "test PGD"),
                       ("test_clean_ema", "EMA clean"), ("test_pgd_ema", "EMA PGD"),
                       ("holdout_pgd", "held-out PGD")):
        pts = [(r["epoch"], r[key]) for r in rows if r.get(key) not in (None, "")]
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=label)
    axes[1].set_title("accuracy")
    axes[2].plot(ep, [r["lr"] for r in rows], marker="o", label="lr")
    ax2 = axes[2].twinx()
    ax2.plot(ep, [r["eps_t"] * 255 for r in rows], color="tab:red", marker=".", label="eps_t x255")
    axes[2].set_title("lr (left) / eps_t x 255 (right)")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def summary(rows: List[dict], paper_row: Optional[int]):
    """pandas table: this run's last test accuracies next to the paper's numbers for its row."""
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
        robust = "robust % (run: PGD on the test subset; paper: AutoAttack)"
    else:  # no paper number to compare with: show the run alone
        robust = "robust % (PGD on the test subset)"
    table = pd.DataFrame(columns, index=["clean %", robust])
    return table
