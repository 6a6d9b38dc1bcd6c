"""A tiny generated ImageFolder tree and a timm config on it (not a test module)."""
from __future__ import annotations

import os

import numpy as np

#: the smallest timm CNN at 64 px: a few seconds per epoch on one CPU thread
TINY_TIMM = "timm:test_efficientnet"


def make_image_folder(root, n_classes: int = 10, per_class=(3, 2), size: int = 64, seed: int = 0) -> str:
    """``root/{train,val}/c<k>/<i>.jpg``: 64 px JPEGs, class k tinted by k (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val"), per_class):
        for k in range(n_classes):
            folder = os.path.join(root, split, f"c{k:02d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size + 8 * (i % 2), 3)).astype(np.uint8)
                img[..., k % 3] += np.uint8(19 * k)
                Image.fromarray(img).save(os.path.join(folder, f"{i}.jpg"), quality=90)
    return os.fspath(root)


def folder_config(folder, method="gkl_at", **sections):
    """A seconds-long CPU training config on a generated ImageFolder under ``folder``."""
    root = make_image_folder(os.path.join(folder, "data"))
    cfg = {
        "run": {"name": "t", "seed": 0, "device": "cpu", "out_dir": os.path.join(folder, "runs"),
                "progress": False},
        "data": {"dataset": "imagefolder", "root": root, "num_classes": 10, "image_size": 32,
                 "batch_size": 10, "test_subset": 6, "augment": "basic"},
        "model": {"arch": TINY_TIMM},
        "objective": {"name": method},
        "attack": {"eps": "4/255", "schedule": "fixed", "steps": 1, "step_size": "2/255", "ramp": False},
        "optim": {"epochs": 2, "lr": 0.05, "weight_decay": 0.0},
        "eval": {"test_pgd_steps": 1},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg
