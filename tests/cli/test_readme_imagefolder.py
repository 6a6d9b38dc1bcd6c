"""The README's own ImageFolder example runs as written on a small generated folder (200 classes,
one training and one validation image each): its data.train_subset / data.test_subset fit the
folder. Only the run's length, cost and place are overridden (one epoch, a 1-step attack, 32 px)."""
from __future__ import annotations

import os
import re

from trainer_helpers import one_thread

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _readme_command():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    m = re.search(r"^(advtrain train configs/cpu/tiny_trades\.yaml data\.dataset=imagefolder(?:.*\\\n)*.*)$",
                  text, re.M)
    assert m, "the README's ImageFolder example is gone"
    return m.group(1).replace("\\\n", " ").split()


def test_readme_imagefolder_example_runs_on_a_small_folder(tmp_path):
    import numpy as np
    from PIL import Image

    words = _readme_command()
    assert words[:2] == ["advtrain", "train"] and "data.root=DIR" in words
    root = str(tmp_path / "folder")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k in range(200):
            os.makedirs(os.path.join(root, split, f"c{k:03d}"))
            img = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
            Image.fromarray(img).save(os.path.join(root, split, f"c{k:03d}", "0.jpg"))
    args = [w.replace("DIR", root) for w in words[2:]]
    # shorter, not different data: one epoch, a 1-step attack, 32 px (the subsets stay as written)
    extra = ["optim.epochs=1", f"run.out_dir={tmp_path / 'runs'}", "run.progress=false",
             "eval.test_pgd_steps=0", "attack.schedule=fixed", "attack.steps=1", "attack.step_size=1/255",
             "data.image_size=32"]
    from advtrain.cli import main

    cwd = os.getcwd()
    os.chdir(REPO)  # the config's relative paths, as from a clone
    try:
        with one_thread():
            assert main(["train", *args, *extra]) == 0
    finally:
        os.chdir(cwd)
    assert os.path.isfile(tmp_path / "runs" / "tiny_trades" / "last.pt")
