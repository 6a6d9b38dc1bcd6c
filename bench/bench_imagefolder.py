"""ImageFolder loader throughput: decoded + augmented images/s on ONE core (the rate per worker).

Writes ``--n`` JPEGs of ImageNet's typical size (``--width`` x ``--height``, default 500 x 375, JPEG
quality 90) whose content is smooth gradients + mild noise (natural photos compress and decode like
this, unlike uniform noise), then times :class:`advtrain.data.imagefolder.FolderDataset` item by item
in this process with one torch thread: the training path (PIL decode + RandomResizedCrop to
``--size`` + flip + to-tensor) and the evaluation path (Resize 256/224 + CenterCrop + to-tensor).
A DataLoader with W workers on W free cores delivers about W times this rate. Example::

    python bench/bench_imagefolder.py --n 200 --size 224
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch


def write_images(folder: str, n: int, width: int, height: int) -> list:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    os.makedirs(os.path.join(folder, "c0"), exist_ok=True)
    for i in range(n):
        a, b, c = rng.uniform(0.2, 1.0, 3)
        base = np.stack([128 + 100 * np.sin(a * xx / 37 + i), 128 + 100 * np.cos(b * yy / 23),
                         128 + 80 * np.sin(c * (xx + yy) / 51)], -1)
        img = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        path = os.path.join(folder, "c0", f"{i}.jpg")
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


def rate(dataset, repeats: int) -> float:
    dataset[0]  # warm-up (imports, first decode)
    start = time.perf_counter()
    for _ in range(repeats):
        for i in range(len(dataset)):
            dataset[i]
    return repeats * len(dataset) / (time.perf_counter() - start)


def main(argv=None) -> int:
    from advtrain.data.imagefolder import FolderDataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_images(folder, args.n, args.width, args.height)
        mb = sum(os.path.getsize(q) for q in paths) / len(paths) / 1e3
        samples = [(q, 0) for q in paths]
        train = rate(FolderDataset(samples, args.size, train=True, seed=0), args.repeats)
        val = rate(FolderDataset(samples, args.size, train=False), args.repeats)
    import PIL

    print(f"machine: {platform.node()} {platform.processor() or platform.machine()} "
          f"cpus={os.cpu_count()} torch={torch.__version__} Pillow={PIL.__version__}")
    print(f"{args.n} JPEGs {args.width}x{args.height} (mean {mb:.0f} kB) -> {args.size} px, 1 core:")
    print(f"  train (decode + RandomResizedCrop + flip): {train:7.1f} images/s per core")
    print(f"  eval  (decode + Resize + CenterCrop):      {val:7.1f} images/s per core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
