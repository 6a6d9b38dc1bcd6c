"""Cost of one training step per regime: passes counted (forward hooks) and CPU time measured in one run.

Each regime is the objective and attack of its config (configs/*_cifar10.yaml; PGD-AT and TRADES with
K=10 fixed steps of 2/255; APGD-CE with 2 steps), built through the config loader and run as the
trainer's step does: ``x_adv = objective.perturb(model, x, y)``, ``loss = objective.loss(...)``,
``backward``, SGD step. Printed per regime: forwards with grad, forwards without grad, the
time of one step (median of ``--steps``) and its ratio to clean training's step, all measured in
this one run on the same model, batch and threads. The pass counts do not depend on the device.

Example::

    python bench/bench_regimes.py --arch wrn-10-1 --batch 32 --steps 5 --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

E8 = "8/255"
FIXED = {"schedule": "fixed", "ramp": False}
#: ``name -> (objective section, attack section)``: also the regimes bench/rank_objectives.py trains
#: (tests/cli/test_bench_rank.py checks the single-step and clean ones against their configs)
REGIMES = {
    "clean": ({"name": "ce"}, {"name": "none", "eps": E8, "steps": 0, "step_size": 0.0, **FIXED}),
    "fgsm_rs": ({"name": "ce"}, {"name": "fgsm_rs", "eps": E8, "steps": 1, "step_size": "10/255",
                                 "bn_mode": "train", **FIXED}),
    "n_fgsm": ({"name": "ce"}, {"name": "n_fgsm", "eps": E8, "steps": 1, "step_size": E8,
                                "bn_mode": "train", **FIXED}),
    "grad_align": ({"name": "ce", "grad_align": 0.2}, {"name": "fgsm", "eps": E8, "steps": 1,
                                                       "step_size": E8, "bn_mode": "train", **FIXED}),
    "apgd2": ({"name": "ce"}, {"name": "apgd", "eps": "4/255", "steps": 2, "step_size": "4/255", **FIXED}),
    "pgd_at10": ({"name": "pgd_at"}, {"name": "pgd", "eps": E8, "steps": 10, "step_size": "2/255",
                                      "init": "uniform", **FIXED}),
    "trades10": ({"name": "trades"}, {"name": "pgd", "eps": E8, "steps": 10, "step_size": "2/255",
                                      "init": "normal", **FIXED}),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="wrn-10-1")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--regimes", default=",".join(REGIMES))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from advtrain import config as C
    from advtrain.models import create_model
    from advtrain.train.setup import make_objective

    torch.manual_seed(0)
    x, y = torch.rand(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    rows = []
    for name in args.regimes.split(","):
        objective, attack = REGIMES[name]
        cfg = C.from_dict({"objective": dict(objective), "attack": dict(attack), "model": {"arch": args.arch}})
        torch.manual_seed(0)
        model = create_model(args.arch, dataset="cifar10").train()
        obj = make_objective(cfg, 10)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        counts = {"grad": 0, "nograd": 0}

        def hook(module, inputs, output):
            counts["grad" if torch.is_grad_enabled() else "nograd"] += 1

        handle = model.register_forward_hook(hook)
        times = []
        for step in range(args.steps + 1):  # the first step warms up and is not timed
            counts.update(grad=0, nograd=0)
            t0 = time.perf_counter()
            x_adv = obj.perturb(model, x, y)
            model.train()
            loss, _ = obj.loss(model, x, x_adv, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step:
                times.append(time.perf_counter() - t0)
        handle.remove()
        rows.append((name, counts["grad"], counts["nograd"], statistics.median(times)))
    base = next((t for n, _, _, t in rows if n == "clean"), rows[0][3])
    print(f"{args.arch}, batch {args.batch}, {torch.get_num_threads()} thread(s), median of {args.steps} steps")
    print("| regime | forwards with grad | forwards without grad | s / step | x clean |")
    print("|---|---|---|---|---|")
    for name, g, n, t in rows:
        print(f"| {name} | {g} | {n} | {t:.3f} | {t / base:.1f} |")


if __name__ == "__main__":
    main()
