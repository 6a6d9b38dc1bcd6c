"""Tiny offline training setups shared by the trainer / resume / average tests (not a test module)."""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch


def make_npz(folder, n_train: int = 16, n_test: int = 8, seed: int = 0):
    """train.npz / test.npz of 32x32 images, labels 0/1, class 1 much brighter (easy to learn)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 2
        img = rng.integers(0, 80, (n, 32, 32, 3)).astype(np.uint8)
        img[y == 1] += 150
        path = os.path.join(folder, f"{name}.npz")
        np.savez(path, image=img, label=y.astype(np.int64))
        paths.append(path)
    return paths


def tiny_config(folder, **sections):
    """A config dict for a seconds-long CPU run on the npz files in ``folder``."""
    train, test = make_npz(folder)
    cfg = {
        "run": {"name": "t", "seed": 0, "device": "cpu", "out_dir": os.path.join(folder, "runs"),
                "progress": False},
        "data": {"dataset": "cifar10", "train_npz": train, "test_npz": test, "batch_size": 8,
                 "test_subset": 8, "augment": "none"},
        "model": {"arch": "wrn-10-1"},
        "objective": {"name": "trades"},
        "attack": {"schedule": "fixed", "steps": 1, "step_size": "2/255", "ramp": False},
        "optim": {"epochs": 2, "lr": 0.05, "weight_decay": 0.0},
        "eval": {"test_pgd_steps": 1},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(name, {}).update(values)
        else:
            cfg[name] = values
    return cfg


@contextlib.contextmanager
def one_thread():
    """One intra-op thread (``ADVTRAIN_TEST_THREADS`` when set, see conftest.py): the test machine
    is small and shared; ``sh/test_matrix.sh`` runs the suite with 1 and 2 threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("ADVTRAIN_TEST_THREADS", "1")))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def states_equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
