"""Does distillation from a robust teacher beat the student's own adversarial training on a CPU budget?

Trains the same small student with the same data, epochs, attack and seed under each objective of
``--objectives`` and prints the per-epoch test-subset accuracies of the last epoch (clean and
PGD-K at 8/255, from ``metrics.csv``). The distillation objectives use the config's teacher (by
default the quickstart's export: run ``sh/quickstart.sh`` first); ``pgd_at`` is the same student
trained with plain CE on its own adversarial examples. Kept as a benchmark, not a test: on a few
minutes of CPU the margin depends on the teacher's quality and on the seed.

Example::

    python bench/bench_distill_cpu.py                                   # rslad, gkl_kd vs pgd_at
    python bench/bench_distill_cpu.py --seeds 0,1,2 optim.epochs=3      # extra args: overrides
"""
from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(config: str, objective: str, seed: int, overrides, folder: str) -> dict:
    from advtrain import config as C
    from advtrain.train.loop import fit

    extra = [f"objective={{name: {objective}}}", f"run.seed={seed}", "run.progress=false",
             f"run.out_dir={folder}", f"run.name={objective}-{seed}"]
    if objective not in ("ard", "rslad", "gkl_kd"):
        extra.append("teacher=")
    cfg = C.load(config, [*extra, *overrides])
    start = time.time()
    run_dir = fit(cfg)
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        last = list(csv.DictReader(f))[-1]
    return {"clean": float(last["test_clean"]), "pgd": float(last["test_pgd"]),
            "seconds": time.time() - start}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=os.path.join(REPO, "configs", "cpu", "tiny_rslad_from_quickstart.yaml"))
    p.add_argument("--objectives", default="rslad,gkl_kd,pgd_at")
    p.add_argument("--seeds", default="0")
    p.add_argument("overrides", nargs="*", help="section.key=value for every run")
    args = p.parse_args(argv)
    os.chdir(REPO)  # the config's relative paths (data, checkpoints) are repository-relative
    with tempfile.TemporaryDirectory() as folder:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for objective in args.objectives.split(","):
                r = run(args.config, objective, seed, args.overrides, folder)
                print(f"seed {seed} {objective:7s} test clean {r['clean']:.3f}  PGD {r['pgd']:.3f}  "
                      f"({r['seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
