"""GPU throughput of the real GKL-AT step (WRN-34-10): images/s and model-FLOPs utilisation (MFU).

For each batch size (default 128, 256, 512) and precision (fp32, TF32, bf16 autocast) the trainer's
own step is timed (K=5 attack steps, AWP on, as in the reference recipe). FLOPs per step come from
the passes the step makes (counted as in ``bench_train_step.py``) and one forward's FLOPs
(``advtrain.models.count_flops``), counting an input-backward as 1 forward and a full backward as 2::

    MFU = fwd_eq * FLOPs(forward of one batch) / t(step) / peak

``peak`` is the dense tensor-core peak of the precision on the detected GPU (H100/H200/A100 table
below, or ``--peak-tflops``). Without a GPU the script prints "no GPU" and exits 0. Example::

    python bench/bench_gpu.py --batches 128,256,512 --repeats 5
    python bench/bench_gpu.py --arch timm:resnet50 --batches 128,256 --precisions bf16
    python bench/bench_gpu.py --arch timm:vit_small_patch16_224 --batches 128,256 --precisions bf16

timm models train on a generated 224 px ImageFolder (``--image-size``); their attention matmuls are
in the FLOPs (``advtrain.models.flops``).
"""
from __future__ import annotations

import argparse
import tempfile

import torch

#: dense peak TFLOP/s by (GPU name fragment, precision): vendor datasheets (SXM parts)
PEAK_TFLOPS = {("H100", "fp32"): 67.0, ("H100", "tf32"): 494.7, ("H100", "bf16"): 989.4,
               ("H200", "fp32"): 67.0, ("H200", "tf32"): 494.7, ("H200", "bf16"): 989.4,
               ("A100", "fp32"): 19.5, ("A100", "tf32"): 156.0, ("A100", "bf16"): 312.0}


def peak(name: str, precision: str, override: float) -> float:
    if override:
        return override * 1e12
    for (frag, prec), value in PEAK_TFLOPS.items():
        if frag in name and prec == precision:
            return value * 1e12
    return float("nan")


def set_precision(precision: str) -> str:
    """Global matmul/cudnn settings for ``precision``; returns the trainer's ``precision`` value."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return "bf16" if precision == "bf16" else "fp32"


def run_one(arch, batch, precision, steps, repeats, warmup, peak_override, image_size=224) -> dict:
    from bench_attack import timed
    from bench_train_step import count_passes, make_trainer

    from advtrain.models import count_flops

    set_precision(precision)
    with tempfile.TemporaryDirectory() as folder:
        trainer = make_trainer(arch, "gkl_at", True, batch, steps, "cuda", folder, image_size)
        if precision == "bf16":
            trainer.cfg.precision = "bf16"
            from advtrain.trainer_setup import _autocast

            trainer.autocast = _autocast(trainer.cfg, trainer.device)
        x, y = next(iter(trainer.loader))
        x, y = x.to(trainer.device), y.to(trainer.device)
        passes = count_passes(trainer, x, y)
        t = timed(lambda: trainer._train_step(x, y, 1), trainer.device, repeats, warmup)
        from advtrain.distributed import unwrap

        size = getattr(unwrap(trainer.model), "image_size", 32)  # timm models: --image-size
        flops_fwd = count_flops(unwrap(trainer.model), (batch, 3, size, size))
    fwd_eq = 2 * passes[("eval", True)] + passes[("eval", False)] + passes[("train", False)] \
        + 3 * passes[("train", True)]
    achieved = fwd_eq * flops_fwd / t
    name = torch.cuda.get_device_name()
    return {"images_s": batch / t, "tflops": achieved / 1e12,
            "mfu": achieved / peak(name, precision, peak_override), "fwd_eq": fwd_eq}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="wrn-34-10")
    p.add_argument("--batches", default="128,256,512")
    p.add_argument("--precisions", default="fp32,tf32,bf16")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=0.0)
    p.add_argument("--image-size", type=int, default=224, help="timm:<name> archs: pixels")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no GPU")
        return 0
    print(f"device: {torch.cuda.get_device_name()} torch={torch.__version__} arch={args.arch} "
          f"GKL-AT K={args.steps} AWP on")
    for batch in (int(b) for b in args.batches.split(",")):
        for precision in args.precisions.split(","):
            r = run_one(args.arch, batch, precision, args.steps, args.repeats, args.warmup,
                        args.peak_tflops, args.image_size)
            print(f"batch {batch:4d} {precision:5s}: {r['images_s']:8.1f} img/s  "
                  f"{r['tflops']:7.1f} TFLOP/s  MFU {r['mfu']:.1%}  ({r['fwd_eq']} fwd-eq/step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
