"""GPU throughput of the real GKL-AT step (WRN-34-10): images/s and model-FLOPs utilisation (MFU).

For each batch size (default 128, 256, 512) and precision (fp32, TF32, bf16 autocast) the trainer's
own step is timed in two rows, both in steady state (``--warmup`` untimed steps first, so CUDA
start-up, cuDNN autotuning -- ``cudnn.benchmark`` is on: shapes are fixed -- and ``torch.compile``
compilation are excluded; then ``--repeats`` timed steps between ``cuda.synchronize()`` calls):

* ``resident``: the same batch, already on the GPU, every step (an upper bound: no data path);
* ``loader``: each step takes the next batch of the real training loader
  (:func:`advtrain.data.build_train_loader`: ``--workers`` workers, pinned memory, crop+flip on the
  GPU) over a generated uint8 npz of ``--loader-images`` images, so the data path is in the time.

K=5 attack steps, AWP on, as in the reference recipe. FLOPs per step come from the passes the step
makes (counted as in ``bench_train_step.py``) and one forward's FLOPs (``advtrain.models.count_flops``),
counting an input-backward as 1 forward and a full backward as 2::

    MFU = fwd_eq * FLOPs(forward of one batch) / t(step) / peak

``peak`` is the dense tensor-core peak of the precision on the detected GPU (:func:`peak_tflops`, or
``--peak-tflops``). Without CUDA the script prints "no CUDA" and exits 0. Example::

    python bench/bench_gpu.py --batches 128,256,512 --repeats 20 --warmup 5 [--compile]
    python bench/bench_gpu.py --arch timm:resnet50 --batches 128,256 --precisions bf16
    python bench/bench_gpu.py --arch timm:vit_small_patch16_224 --batches 128,256 --precisions bf16

timm models train on a generated 224 px ImageFolder (``--image-size``); their attention matmuls are
in the FLOPs (``advtrain.models.flops``). The "loader" rows of timm models still read the 32 px CIFAR-style
loader (their image rate, not the ImageFolder decode rate: see bench/bench_imagefolder.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import numpy as np
import torch

#: dense (no sparsity) peak TFLOP/s by (GPU variant, precision), from NVIDIA's datasheets, which print
#: the sparse tensor figure; dense = half of it. H100 SXM5 / H200 SXM: FP32 67, TF32 989 sparse,
#: BF16 1,979 sparse. H100 PCIe: FP32 51, TF32 756 sparse, BF16 1,513 sparse. H100 NVL / H200 NVL:
#: FP32 60, TF32 835 sparse, BF16 1,671 sparse. A100 (SXM/PCIe): FP32 19.5, TF32 156, BF16 312 dense.
PEAK_TFLOPS = {
    "H100 SXM": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5},
    "H200 SXM": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
}


def gpu_variant(name: str, memory_gib: float) -> str:
    """The :data:`PEAK_TFLOPS` key of a device, from its name and memory ('' when unknown).

    ``torch.cuda.get_device_name`` gives e.g. "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe"
    (80 GB HBM2e), "NVIDIA H100 NVL" (94 GB), "NVIDIA H200" (141 GB, SXM) / "NVIDIA H200 NVL".
    """
    for chip in ("H100", "H200"):
        if chip in name:
            if "NVL" in name or (chip == "H100" and memory_gib > 90):
                return f"{chip} NVL"
            if "PCIe" in name:
                return f"{chip} PCIe" if chip == "H100" else ""
            if chip == "H200" or "SXM" in name or "HBM3" in name:
                return f"{chip} SXM"
            return ""
    return "A100" if "A100" in name else ""


def peak_tflops(name: str, memory_gib: float, precision: str) -> float:
    """Dense peak TFLOP/s of ``precision`` on the device, NaN when the device is not in the table."""
    return PEAK_TFLOPS.get(gpu_variant(name, memory_gib), {}).get(precision, float("nan"))


def set_precision(precision: str) -> str:
    """Global matmul/cudnn settings for ``precision``; returns the trainer's ``precision`` value.

    bf16 keeps TF32 on (the trainer's policy, ``tf32: true``): what runs outside autocast is TF32."""
    tf32 = precision in ("tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True  # fixed shapes: autotuned once, during the warm-up steps
    return "bf16" if precision == "bf16" else "fp32"


def steady_seconds(step, warmup: int, repeats: int) -> float:
    """Mean seconds per ``step()`` over ``repeats`` calls after ``warmup`` untimed ones (synchronized)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def endless(loader):
    """The loader's batches, epoch after epoch."""
    from advtrain.data import set_loader_epoch

    epoch = 0
    while True:
        set_loader_epoch(loader, epoch)
        yield from loader
        epoch += 1


def make_loader(folder: str, batch: int, n_images: int, workers: int, device):
    from advtrain.data import build_train_loader

    rng = np.random.default_rng(1)
    path = os.path.join(folder, "loader.npz")
    np.savez(path, image=rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8),
             label=rng.integers(0, 10, n_images))
    return build_train_loader("cifar10", train_npz=path, batch_size=batch, workers=workers, device=device,
                              augment="basic", drop_last=True)


def run_one(args, batch: int, precision: str) -> dict:
    from bench_train_step import count_passes, make_trainer

    from advtrain.distributed import unwrap
    from advtrain.models import count_flops

    set_precision(precision)
    with tempfile.TemporaryDirectory() as folder:
        trainer = make_trainer(args.arch, "gkl_at", True, batch, args.steps, "cuda", folder,
                               args.image_size)
        set_precision(precision)  # again: building the trainer applied its own tf32 setting
        if precision == "bf16":
            trainer.cfg = dataclasses.replace(trainer.cfg, precision="bf16")  # the config is frozen
            from advtrain.train.setup import _autocast

            trainer.parts.autocast = _autocast(trainer.cfg, trainer.parts.device)
        x, y = next(iter(trainer.parts.loader))
        x, y = x.to(trainer.parts.device), y.to(trainer.parts.device)
        passes = count_passes(trainer, x, y)  # before compiling: the hook matches the model class
        size = getattr(unwrap(trainer.parts.model), "image_size", 32)  # timm models: --image-size
        flops_fwd = count_flops(unwrap(trainer.parts.model), (batch, 3, size, size))
        if args.compile:
            trainer.parts.model = torch.compile(trainer.parts.model)
        t_res = steady_seconds(lambda: trainer._train_step(x, y, 1), args.warmup, args.repeats)
        batches = endless(make_loader(folder, batch, max(args.loader_images, 2 * batch), args.workers,
                                      trainer.parts.device))
        t_load = steady_seconds(lambda: trainer._train_step(*next(batches), 1), args.warmup, args.repeats)
    fwd_eq = 2 * passes[("eval", True)] + passes[("eval", False)] + passes[("train", False)] \
        + 3 * passes[("train", True)]
    props = torch.cuda.get_device_properties(0)
    peak = args.peak_tflops or peak_tflops(props.name, props.total_memory / 2**30, precision)
    rows = {}
    for kind, t in (("resident", t_res), ("loader", t_load)):
        achieved = fwd_eq * flops_fwd / t
        rows[kind] = {"images_s": batch / t, "tflops": achieved / 1e12, "mfu": achieved / (peak * 1e12)}
    return {"rows": rows, "fwd_eq": fwd_eq}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="wrn-34-10")
    p.add_argument("--batches", default="128,256,512")
    p.add_argument("--precisions", default="fp32,tf32,bf16")
    p.add_argument("--steps", type=int, default=5, help="attack steps K")
    p.add_argument("--repeats", type=int, default=20, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (start-up, autotune, compile)")
    p.add_argument("--workers", type=int, default=4, help="loader workers of the 'loader' rows")
    p.add_argument("--loader-images", type=int, default=8192)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compiled in warm-up)")
    p.add_argument("--peak-tflops", type=float, default=0.0)
    p.add_argument("--image-size", type=int, default=224, help="timm:<name> archs: pixels")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU on this machine; nothing to measure (exit 0)")
        return 0
    props = torch.cuda.get_device_properties(0)
    variant = gpu_variant(props.name, props.total_memory / 2**30) or "unknown: MFU needs --peak-tflops"
    print(f"device: {props.name} ({props.total_memory / 2**30:.0f} GiB, peak table: {variant}) "
          f"torch={torch.__version__} arch={args.arch} GKL-AT K={args.steps} AWP on "
          f"warmup={args.warmup} timed={args.repeats} compile={args.compile} workers={args.workers}")
    for batch in (int(b) for b in args.batches.split(",")):
        for precision in args.precisions.split(","):
            r = run_one(args, batch, precision)
            for kind, row in r["rows"].items():
                print(f"batch {batch:4d} {precision:5s} {kind:8s}: {row['images_s']:8.1f} img/s  "
                      f"{row['tflops']:7.1f} TFLOP/s  MFU {row['mfu']:.1%}  ({r['fwd_eq']} fwd-eq/step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
