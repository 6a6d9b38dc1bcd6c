"""Training-step overhead: the trainer's real step / the ideal cost of the passes it must make.

SPEC §9 counts the passes of one GKL-AT / TRADES step: K attack steps (eval forward + backward to the
input), the cached natural logits of the attack (one eval forward, no grad), the main forwards on
x_adv and x (train mode) with one backward through both, and with AWP the same two forwards and a
weight-backward on the proxy. This script counts the passes the step actually makes (a forward
hook on the model class, so the AWP proxy is counted too), measures each kind of pass alone, and::

    ideal = K_att * t(eval fwd + input bwd) + E * t(eval fwd, no grad) + M * t(train fwd + bwd)
    ratio = t(step) / ideal                                                 target <= 1.15

where M counts train-mode forwards with grad (each paired with its share of a backward).
The distillation objectives (``ard``, ``rslad``, ``gkl_kd``) get a teacher of the student's
architecture, so their one teacher forward per step is counted and costed as an eval forward.
Examples::

    python bench/bench_train_step.py                          # wrn-10-1, batch 32, CPU, K=5
    python bench/bench_train_step.py --arch wrn-34-10 --batch 128 --device cuda --steps 5
    python bench/bench_train_step.py --objectives rslad,gkl_kd,ard       # robust distillation
    python bench/bench_train_step.py --arch timm:resnet50 --batch 4 --objectives gkl_at,trades
    python bench/bench_train_step.py --arch timm:vit_small_patch16_224 --batch 4 --objectives trades

``timm:<name>`` architectures train on a generated ImageFolder of ``--image-size`` px JPEGs (224 by
default): the real decode + RandomResizedCrop path, with the loader outside the timed step as above.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from bench_attack import input_grad_pass, timed


def _data(arch, batch, folder, image_size):
    """The data section: a generated npz (CIFAR zoo) or ImageFolder (timm models)."""
    rng = np.random.default_rng(0)
    if not arch.startswith("timm:"):
        path = os.path.join(folder, "train.npz")
        np.savez(path, image=rng.integers(0, 256, (2 * batch, 32, 32, 3), dtype=np.uint8),
                 label=(np.arange(2 * batch) % 10).astype(np.int64))
        return {"dataset": "cifar10", "train_npz": path}
    from PIL import Image

    for i in range(2 * batch):
        sub = os.path.join(folder, "images", "train", f"c{i % 10}")
        os.makedirs(sub, exist_ok=True)
        img = rng.integers(0, 256, (image_size * 8 // 7, image_size * 8 // 7, 3), dtype=np.uint8)
        Image.fromarray(img).save(os.path.join(sub, f"{i}.jpg"), quality=90)
    return {"dataset": "imagefolder", "root": os.path.join(folder, "images"),
            "num_classes": min(10, 2 * batch), "image_size": image_size}


def make_trainer(arch, objective, awp, batch, steps, device, folder, image_size=224):
    """A real :class:`advtrain.train.loop.Trainer` on generated data (nothing is written)."""
    from advtrain import config as C
    from advtrain.train.loop import Trainer

    data = _data(arch, batch, folder, image_size)
    from advtrain.models import create_model
    from advtrain.objectives import DISTILLATION

    extra = {}
    if objective in DISTILLATION:  # a teacher of the same architecture: its forward is counted
        teacher = os.path.join(folder, "teacher.pt")
        torch.save(create_model(arch, dataset=data["dataset"], num_classes=data.get("num_classes"),
                                **({"image_size": image_size} if "num_classes" in data else {})).state_dict(), teacher)
        extra["teacher"] = {"checkpoint": teacher, "arch": arch}
    cfg = C.from_dict({**extra,
        "run": {"name": "bench", "device": device, "out_dir": folder, "progress": False},
        "data": {**data, "batch_size": batch, "test_subset": 0, "augment": "none"},
        "model": {"arch": arch}, "objective": {"name": objective},
        "attack": {"schedule": "fixed", "steps": steps, "step_size": "2/255", "ramp": False},
        "awp": {"enabled": awp, "warmup": 1}, "optim": {"epochs": 1}})
    trainer = Trainer(cfg, os.path.join(folder, "run"), None)
    trainer._set_epoch_hparams(1)
    return trainer


def count_passes(trainer, x, y) -> Counter:
    """Forwards of the model class during one step, keyed by (mode, grad enabled)."""
    cls, seen = type(trainer.parts.model), Counter()

    def hook(module, _inp, _out):
        if type(module) is cls:
            seen[("train" if module.training else "eval", torch.is_grad_enabled())] += 1

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        trainer._train_step(x, y, 1)
    finally:
        handle.remove()
    return seen


def unit_costs(model, x, y, repeats, warmup) -> dict:
    """Seconds of one pass of each kind on the batch."""
    device = x.device

    def train_pass():
        model.train()
        F.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)

    def eval_nograd():
        with torch.no_grad():
            model(x)

    model.eval()
    out = {"attack": timed(lambda: input_grad_pass(model, x, y), device, repeats, warmup),
           "eval": timed(eval_nograd, device, repeats, warmup),
           "train": timed(train_pass, device, repeats, warmup)}
    model.train()
    return out


def bench(arch, objective, awp, batch, steps, device, repeats, warmup, image_size=224) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        trainer = make_trainer(arch, objective, awp, batch, steps, device, folder, image_size)
        x, y = next(iter(trainer.parts.loader))
        x, y = x.to(trainer.parts.device), y.to(trainer.parts.device)
        passes = count_passes(trainer, x, y)
        t_step = timed(lambda: trainer._train_step(x, y, 1), trainer.parts.device, repeats, warmup)
        from advtrain.distributed import unwrap

        unit = unit_costs(unwrap(trainer.parts.model), x, y, repeats, warmup)
    k_att, e_ng = passes[("eval", True)], passes[("eval", False)] + passes[("train", False)]
    m = passes[("train", True)]
    ideal = k_att * unit["attack"] + e_ng * unit["eval"] + m * unit["train"]
    fwd_eq = 2 * k_att + e_ng + 3 * m  # input backward = 1 forward, full backward = 2 (SPEC §9)
    return {"objective": objective, "awp": awp, "t_step": t_step, "ideal": ideal,
            "ratio": t_step / ideal, "passes": dict(attack=k_att, eval=e_ng, train=m),
            "forward_equivalents": fwd_eq}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="wrn-10-1")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="attack steps K (reference: 5)")
    p.add_argument("--objectives", default="gkl_at,trades,rslad,gkl_kd,ard")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224, help="timm:<name> archs: pixels (default 224)")
    p.add_argument("--no-awp", action="store_true", help="only the runs without AWP")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.node()} {platform.machine()} threads={torch.get_num_threads()} "
          f"device={args.device} torch={torch.__version__}; {args.arch} batch {args.batch} "
          f"K={args.steps}")
    for objective in args.objectives.split(","):
        for awp in (False,) if args.no_awp else (False, True):
            r = bench(args.arch, objective, awp, args.batch, args.steps, args.device,
                      args.repeats, args.warmup, args.image_size)
            print(f"{objective:7s} awp={str(awp):5s} passes {r['passes']} "
                  f"({r['forward_equivalents']} fwd-eq)  step {r['t_step'] * 1e3:8.1f} ms  "
                  f"ideal {r['ideal'] * 1e3:8.1f} ms  ratio {r['ratio']:.3f} "
                  f"({'ok' if r['ratio'] <= 1.15 else 'MISSED'} vs 1.15)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
