"""Reproduce catastrophic overfitting (CO) on CPU, with and without the guard (SPEC §13.6, issue 25).

Each setting is trained twice by the real trainer (``advtrain.fit``) from the same seed:

- without the guard (``guard.policy: warn``: the guard only measures and reports, training goes on,
  so the run is the unguarded trajectory with clean, PGD and FGSM test accuracy each epoch and the
  guard's verdict in the ``co`` column);
- with the guard (``guard.policy: stop`` or ``rollback``, ``--policy``): the run ends at the first
  epoch the guard calls a collapse, ``best.pt`` holding the last good epoch.

It prints one line per run (PGD and FGSM test accuracy per epoch, where the guard fired, CPU seconds)
and writes into ``--out``: ``co_<setting>_<policy>.csv`` per run and ``co_<setting>.png`` / ``.svg``
(PGD and FGSM accuracy per epoch, both runs on one figure, the epoch where the guard fired marked;
drawn on the project's own figure canvas, ``advtrain.utils.new_figure``).

Settings (``--settings``, comma-separated; the images are real CIFAR-10 photographs from ``--data``,
``train.npz`` / ``test.npz``, the first images of the named classes, labels renumbered 0..K-1; a
setting with a ``config`` trains that YAML as it is, only its data, run name and guard policy set here):

{settings}

The default, ``cnn16_fgsm16`` (configs/cpu/co_cnn_fgsm16.yaml: GradAlign's one-layer CNN), collapses:
PGD-10 accuracy falls to 0% within epochs 3-4 while FGSM accuracy climbs to 100%, and the guard rolls
the run back to its most robust epoch. The wrn-10-1 settings did not collapse on CPU (2026-12-07: PGD
and FGSM accuracy moved together; the measured grid and its reading are in docs/BENCHMARKS.md).

Example (about {minutes} minutes of one CPU core for the default setting, both runs)::

    python bench/co_reproduce.py --data ../shared/data/cifar10-jpeg --out bench/out/co
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import textwrap
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

E = 1 / 255
#: what every setting shares: the tiny model, Wong's cyclic lr 0.2, PGD-5 (step eps/4) as the test
COMMON = {"lr": 0.2, "schedule": "cyclic", "arch": "wrn-10-1", "pgd": 5, "augment": "none"}
TEN = tuple(range(10))
AIRPLANE_FROG = (0, 6)
#: setting -> what it trains: CIFAR-10 classes, images per split, attack, eps, step, epochs, batch
SETTINGS = {
    "fgsm8_10c": {**COMMON, "classes": TEN, "train": 2048, "test": 250, "attack": "fgsm",
                  "eps": 8 * E, "epochs": 12, "batch": 128,
                  "about": "10 classes, 2,048 images, FGSM from x, eps = step = 8/255, cyclic lr 0.2, 12 epochs"},
    "fgsm12_10c": {**COMMON, "classes": TEN, "train": 2048, "test": 250, "attack": "fgsm",
                   "eps": 12 * E, "epochs": 16, "batch": 128,
                   "about": "10 classes, 2,048 images, FGSM from x, eps = step = 12/255, cyclic lr 0.2, 16 epochs"},
    "fgsm16_2c": {**COMMON, "classes": AIRPLANE_FROG, "train": 1024, "test": 256, "attack": "fgsm",
                  "eps": 16 * E, "epochs": 15, "batch": 64,
                  "about": "airplane/frog, 1,024 images, FGSM from x, eps = step = 16/255, cyclic lr 0.2, 15 epochs"},
    "fgsmrs8_2c": {**COMMON, "classes": AIRPLANE_FROG, "train": 1024, "test": 256, "attack": "fgsm_rs",
                   "eps": 8 * E, "step": 16 * E, "epochs": 15, "batch": 64,
                   "about": "airplane/frog, 1,024 images, FGSM-RS, eps 8/255, step 16/255 (2 eps), cyclic lr 0.2, "
                            "15 epochs"},
    # a YAML trained as it is (config(): only data, outputs and guard policy set here)
    "cnn16_fgsm16": {"config": os.path.join("configs", "cpu", "co_cnn_fgsm16.yaml"), "classes": TEN,
                     "train": 20000, "test": 1000,
                     "about": "GradAlign's one-layer CNN (16 filters), all 20,000 images, FGSM from x at "
                              "16/255, Adam 0.003 cyclic, 10 epochs (configs/cpu/co_cnn_fgsm16.yaml)"},
}
DEFAULT = "cnn16_fgsm16"
MINUTES = 2


def setting_lines() -> str:
    return "\n".join(f"- ``{name}``: {s['about']}" for name, s in SETTINGS.items())


def subset(path: str, classes, n: int):
    """The first ``n / len(classes)`` images of each class in ``classes`` (labels renumbered)."""
    with np.load(path) as d:
        img, lab = d["image"], d["label"]
    idx = np.sort(np.concatenate([np.flatnonzero(lab == c)[: n // len(classes)] for c in classes]))
    remap = np.full(int(lab.max()) + 1, -1, dtype=np.int64)
    remap[list(classes)] = np.arange(len(classes))
    return img[idx], remap[lab[idx]]


def write_data(s: dict, data: str, folder: str):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for split, n in (("train", s["train"]), ("test", s["test"])):
        img, y = subset(os.path.join(data, f"{split}.npz"), s["classes"], n)
        path = os.path.join(folder, f"{split}.npz")
        np.savez(path, image=img, label=y)
        paths.append(path)
    return paths


def config(name: str, s: dict, policy: str, train: str, test: str, out: str, seed: int) -> dict:
    if "config" in s:  # the YAML as it is: only where its data and outputs go, and the guard's policy
        from advtrain.config import read_yaml

        raw = read_yaml(os.path.join(REPO, s["config"]))
        raw["run"] = {**raw["run"], "name": f"co_{name}_{policy}", "seed": seed, "out_dir": out,
                      "progress": False}
        raw["data"] = {**raw["data"], "train_npz": train, "test_npz": test}
        raw["guard"] = {**raw.get("guard", {}), "policy": policy}
        return raw
    attack = {"name": s["attack"], "eps": s["eps"], "schedule": "fixed", "ramp": False}
    if s.get("step"):
        attack["step_size"] = s["step"]
    return {
        "run": {"name": f"co_{name}_{policy}", "seed": seed, "device": "cpu", "out_dir": out,
                "progress": False},
        "data": {"dataset": "cifar10", "train_npz": train, "test_npz": test,
                 "batch_size": s["batch"], "test_subset": s["test"], "augment": s["augment"]},
        "model": {"arch": s["arch"]},
        "objective": {"name": "ce"},
        "attack": attack,
        "optim": {"lr": s["lr"], "schedule": s["schedule"], "epochs": s["epochs"]},
        "eval": {"test_pgd_steps": s["pgd"]},
        "guard": {"policy": policy},
    }


def read_rows(run_dir: str):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def pct(rows, key):
    return [round(100 * float(r[key]), 1) for r in rows]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg"))
    ap.add_argument("--settings", default=DEFAULT, help=f"comma-separated, of: {', '.join(SETTINGS)}")
    ap.add_argument("--policy", default="rollback", choices=("stop", "rollback"),
                    help="the guarded run's guard.policy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "out", "co"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from advtrain import fit

    missing = [f for f in ("train.npz", "test.npz") if not os.path.isfile(os.path.join(args.data, f))]
    if missing:
        sys.exit(f"co_reproduce: {', '.join(missing)} not found in --data {args.data}; pass the folder "
                 "of the CIFAR-10 npz files (image, label)")
    os.makedirs(args.out, exist_ok=True)
    for name in args.settings.split(","):
        if name not in SETTINGS:
            sys.exit(f"co_reproduce: unknown setting {name!r}; choices: {', '.join(SETTINGS)}")
        s = dict(SETTINGS[name])
        train, test = write_data(s, args.data, os.path.join(args.out, f"data_{name}"))
        runs = {}
        for policy in ("warn", args.policy):
            conf = config(name, s, policy, train, test, args.out, args.seed)
            s["pgd"] = conf["eval"]["test_pgd_steps"]  # the figure's label: the steps the run used
            started = time.process_time()
            run = fit(conf, run_dir=os.path.join(args.out, f"co_{name}_{policy}_{int(time.time())}"))
            cpu = time.process_time() - started
            rows = runs[policy] = read_rows(run)
            fired = [int(r["epoch"]) for r in rows if r.get("co") == "1"]
            print(f"{name} guard {policy}: CPU {cpu:.0f} s, epochs {len(rows)}, clean % "
                  f"{pct(rows, 'test_clean')}, PGD-{s['pgd']} % {pct(rows, 'test_pgd')}, FGSM % "
                  f"{pct(rows, 'test_fgsm')}, guard fired at epochs {fired or 'none'}", flush=True)
            with open(os.path.join(args.out, f"co_{name}_{policy}.csv"), "w") as f:
                f.write("epoch,test_clean,test_pgd,test_fgsm,co,cpu_s\n")
                f.writelines(f"{r['epoch']},{r['test_clean']},{r['test_pgd']},{r['test_fgsm']},{r['co']},"
                             f"{cpu:.0f}\n" for r in rows)
        write_figure(name, s, runs, args.policy, os.path.join(args.out, f"co_{name}"))


def write_figure(name: str, s: dict, runs: dict, policy: str, stem: str) -> None:
    """PGD and FGSM test accuracy per epoch, the unguarded run as lines, the guarded run as open
    markers ending where it stopped, the epoch where the guard fired marked; PNG + SVG."""
    from advtrain.io.atomic import commit_files
    from advtrain.utils import FIGURE_FORMATS, figure_bytes, new_figure

    fig = new_figure((5.6, 3.4))
    ax = fig.add_subplot()
    free, guarded = runs["warn"], runs[policy]
    ep = [int(r["epoch"]) for r in free]
    ax.plot(ep, pct(free, "test_pgd"), color="C0", marker="o", ms=3, label=f"PGD-{s['pgd']}, no guard")
    ax.plot(ep, pct(free, "test_fgsm"), color="C1", marker="s", ms=3, label="FGSM, no guard")
    ax.plot(ep, pct(free, "test_clean"), color="0.5", lw=1, ls=":", label="clean, no guard")
    gep = [int(r["epoch"]) for r in guarded]
    ax.plot(gep, pct(guarded, "test_pgd"), color="C0", marker="o", ms=8, mfc="none", ls="none",
            label=f"PGD-{s['pgd']}, guard: {policy}")
    ax.plot(gep, pct(guarded, "test_fgsm"), color="C1", marker="s", ms=8, mfc="none", ls="none",
            label=f"FGSM, guard: {policy}")
    fired = [int(r["epoch"]) for r in guarded if r.get("co") == "1"]
    if fired:
        ax.axvline(fired[0], color="red", ls="--", lw=1)
        best = int(guarded[-1].get("best_epoch") or fired[0] - 1)
        ax.annotate(f"guard fired (epoch {fired[0]});\nbest.pt = epoch {best}", (fired[0], 95),
                    fontsize=7, color="red", ha="right", va="top", xytext=(-4, 0),
                    textcoords="offset points")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(ep)
    verdict = f"guard fired at epoch {fired[0]}" if fired else "guard never fired"
    ax.set_title(textwrap.fill(f"{name}: {s['about']}", 85) + f"\n{verdict}", fontsize=7)
    ax.legend(fontsize=6, loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files = {f"{stem}.{fmt}": figure_bytes(fig, fmt) for fmt in FIGURE_FORMATS}
    commit_files(files, primary=f"{stem}.png")


__doc__ = __doc__.format(settings=setting_lines(), minutes=MINUTES)

if __name__ == "__main__":
    main()
