"""Write a run directory with the code of an earlier release, stopped after epoch 1 of 2.

Run by tests/train/test_resume_old_release.py under ``PYTHONPATH=<that release's advtrain>``:
``python old_release_run.py OUT_DIR``. Uses only the public API every release has (``advtrain.fit``
with ``stop_after``), so the run directory is in that release's own layout.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: helpers
from trainer_helpers import one_thread, tiny_config  # noqa: E402


def config(folder):
    """The run both releases train: GKL-AT with AWP and EMA on tiny npz files in ``folder``."""
    return tiny_config(folder, objective={"name": "gkl_at", "alpha": 1.0, "beta": 1.0},
                       awp={"enabled": True, "warmup": 2}, ema={"enabled": True, "decay": 0.5},
                       data={"augment": "basic"})


if __name__ == "__main__":
    import advtrain

    torch.manual_seed(0)
    with one_thread():
        print(advtrain.fit(config(sys.argv[1]), stop_after=1))
