"""Reproduce catastrophic overfitting (CO) on CPU and show where the guard fires (SPEC §13.6).

Trains a small model (wrn-10-1) with single-step attacks through the real trainer (``advtrain.fit``)
with ``guard.policy: warn``, so every epoch reports clean, PGD-10 and FGSM accuracy on a fixed test
subset and the guard's verdict (``co``); prints one line per epoch and a summary per setting, and
writes ``co_<setting>.csv`` plus ``co_reproduce.png`` (PGD and FGSM accuracy per epoch, the epochs
the guard called a collapse marked) into ``--out``. With ``guard.policy: stop`` the run would end at
the first marked epoch and ``best.pt`` would hold the epoch before it: the same numbers up to there.

Settings (``--settings``, comma-separated):

- ``fgsm16``: FGSM without random start, step = eps = 16/255 (SPEC §13.6 recommended trigger);
- ``fgsm8_step16``: FGSM without random start, eps 8/255, step 16/255 (a step too large, Wong);
- ``fgsmrs16``: FGSM-RS, eps 16/255, step 1.25 eps (uniform start in the ball);
- ``fgsmrs8``: FGSM-RS at the paper's 8/255, step 10/255 (expected: no CO, Wong et al.).

Example (about a minute per epoch on one shared CPU core at 2,048 images)::

    python bench/co_reproduce.py --data ../shared/data/cifar10-jpeg --epochs 15 --train 2048 \\
        --settings fgsm16,fgsm8_step16 --out bench/out/co
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

E = 1 / 255
#: setting -> (eps, step size, start): single-step attacks written as one PGD step
SETTINGS = {
    "fgsm16": (16 * E, 16 * E, "none"),
    "fgsm8_step16": (8 * E, 16 * E, "none"),
    "fgsmrs16": (16 * E, 20 * E, "uniform"),
    "fgsmrs8": (8 * E, 10 * E, "uniform"),
}


def config(name, args):
    eps, step, init = SETTINGS[name]
    return {
        "run": {"name": f"co_{name}", "seed": args.seed, "device": "cpu", "out_dir": args.out,
                "progress": False},
        "data": {"dataset": "cifar10", "train_npz": os.path.join(args.data, "train.npz"),
                 "test_npz": os.path.join(args.data, "test.npz"), "batch_size": 128,
                 "train_subset": args.train, "test_subset": args.test, "augment": "basic"},
        "model": {"arch": args.arch},
        "objective": {"name": "ce"},
        # one PGD step from x (FGSM) or from a uniform point in the ball (FGSM-RS); train-mode BN as
        # the reference codes attack (SPEC 13.0)
        "attack": {"eps": eps, "schedule": "fixed", "ramp": False, "steps": 1, "step_size": step,
                   "init": init, "bn_mode": "train"},
        "optim": {"lr": args.lr, "schedule": args.schedule, "epochs": args.epochs},
        "eval": {"test_pgd_steps": 10},
        "guard": {"policy": "warn"},
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg"))
    ap.add_argument("--settings", default="fgsm16,fgsm8_step16")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--train", type=int, default=2048)
    ap.add_argument("--test", type=int, default=256)
    ap.add_argument("--arch", default="wrn-10-1")
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--schedule", default="cyclic", help="optim.schedule (cyclic: Wong's CyclicLR 0 -> lr -> 0 per batch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "out", "co"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from advtrain import fit

    os.makedirs(args.out, exist_ok=True)
    results = {}
    for name in args.settings.split(","):
        if name not in SETTINGS:
            sys.exit(f"co_reproduce: unknown setting {name!r}; choices: {', '.join(SETTINGS)}")
        started = time.process_time()
        run = fit(config(name, args), run_dir=os.path.join(args.out, f"co_{name}_{args.train}_{args.epochs}_{int(time.time())}"))
        cpu = time.process_time() - started
        with open(os.path.join(run, "metrics.csv")) as f:
            rows = list(csv.DictReader(f))
        results[name] = rows
        fired = [r["epoch"] for r in rows if r.get("co") == "1"]
        print(f"{name}: CPU {cpu:.0f} s, PGD-10 per epoch "
              f"{[round(100 * float(r['test_pgd']), 1) for r in rows]}, FGSM per epoch "
              f"{[round(100 * float(r['test_fgsm']), 1) for r in rows]}, guard fired at epochs "
              f"{fired or 'none'}", flush=True)
        with open(os.path.join(args.out, f"co_{name}_{args.train}_{args.epochs}.csv"), "w") as f:
            f.write("epoch,test_clean,test_pgd,test_fgsm,co\n")
            for r in rows:
                f.write(f"{r['epoch']},{r['test_clean']},{r['test_pgd']},{r['test_fgsm']},{r['co']}\n")
    plot(results, os.path.join(args.out, f"co_reproduce_{args.train}_{args.epochs}.png"))


def plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items()):
        ep = [int(r["epoch"]) for r in rows]
        ax.plot(ep, [100 * float(r["test_pgd"]) for r in rows], marker="o", label="PGD-10")
        ax.plot(ep, [100 * float(r["test_fgsm"]) for r in rows], marker="s", label="FGSM")
        for r in rows:
            if r.get("co") == "1":
                ax.axvline(int(r["epoch"]), color="red", ls="--", lw=0.8)
        flagged = [r["epoch"] for r in rows if r.get("co") == "1"]
        ax.set_title(f"{name} (guard flagged: {', '.join(flagged) if flagged else 'none'})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
