"""ImageFolder loader throughput: decoded + augmented images/s on ONE core (the rate per worker).

Writes ``--n`` JPEGs of ImageNet's typical size (``--width`` x ``--height``, default 500 x 375, JPEG
quality 90) whose content is smooth gradients + mild noise (natural photos compress and decode like
this, unlike uniform noise), then times :class:`advtrain.data.imagefolder.FolderDataset` item by item
in this process with one torch thread: the training path (PIL decode + RandomResizedCrop to
``--size`` + flip + to-tensor) and the evaluation path (Resize 256/224 + CenterCrop + to-tensor).
A DataLoader with W workers on W free cores delivers about W times this rate. ``--recipes`` also
times the training path with each ImageNet recipe's per-image augmentation (ratios to the plain path
from the same run). Example::

    python bench/bench_imagefolder.py --n 200 --size 224 --recipes
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
    p.add_argument("--recipes", action="store_true",
                   help="also time the training path with each ImageNet recipe's augmentation "
                        "(configs/imagenet: bicubic, colour jitter / timm's RandAugment, random erasing)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_images(folder, args.n, args.width, args.height)
        mb = sum(os.path.getsize(q) for q in paths) / len(paths) / 1e3
        samples = [(q, 0) for q in paths]
        train = rate(FolderDataset(samples, args.size, train=True, seed=0), args.repeats)
        val = rate(FolderDataset(samples, args.size, train=False), args.repeats)
        recipes = {}
        if args.recipes:  # the per-image augmentation of each recipe (mixup/cutmix is per batch, on the device)
            for name, augment in RECIPE_AUGMENT.items():
                recipes[name] = rate(FolderDataset(samples, args.size, train=True, seed=0, augment=augment),
                                     args.repeats)
    import PIL

    print(f"machine: {platform.node()} {platform.processor() or platform.machine()} "
          f"cpus={os.cpu_count()} torch={torch.__version__} Pillow={PIL.__version__}")
    print(f"{args.n} JPEGs {args.width}x{args.height} (mean {mb:.0f} kB) -> {args.size} px, 1 core:")
    print(f"  train (decode + RandomResizedCrop + flip): {train:7.1f} images/s per core")
    print(f"  eval  (decode + Resize + CenterCrop):      {val:7.1f} images/s per core")
    for name, r in recipes.items():
        print(f"  train, {name} augmentation: {r:7.1f} images/s per core ({r / train:.2f}x the plain "
              "train path, same run)")
    return 0


#: the per-image augmentation of the configs/imagenet recipes (FolderDataset's ``augment``)
RECIPE_AUGMENT = {
    "ARES (bicubic + colour jitter 0.1)": {"interpolation": "bicubic", "color_jitter": 0.1},
    "revisiting-at (bicubic + timm rand-m9-mstd0.5-inc1 + erasing 0.25)": {
        "interpolation": "bicubic", "timm_randaugment": "rand-m9-mstd0.5-inc1", "reprob": 0.25},
    "torchvision RandAugment 2x9 + erasing 0.25 (bicubic; the recipes' former stand-in)": {
        "interpolation": "bicubic", "randaugment": 2, "randaugment_magnitude": 9, "reprob": 0.25},
}


if __name__ == "__main__":
    raise SystemExit(main())
