"""Every clean-distillation config (configs/kd/*.yaml) trains one step of a tiny variant: its
objective section as written, on a generated ImageFolder (its list files when it uses them), a
tiny timm student, and a tiny timm teacher from a local file in timm's bare-network format (the
self-distillation config: a finished advtrain run)."""
from __future__ import annotations

import csv
import glob
import math
import os

import pytest
import torch
import yaml

from folder_helpers import TINY_TIMM, make_image_folder
from trainer_helpers import one_thread

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KD = sorted(glob.glob(os.path.join(REPO, "configs", "kd", "*.yaml")))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from advtrain.models import create_model

    base = tmp_path_factory.mktemp("kd")
    root = make_image_folder(base / "data", n_classes=10, per_class=(3, 2), size=40)
    lines = {split: [f"{split}/c{k:02d}/{i}.jpg {k}" for k in range(10) for i in range(n)]
             for split, n in (("train", 3), ("val", 2))}
    for split, rows in lines.items():
        (base / f"{split}.txt").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    teacher = create_model(TINY_TIMM, dataset="imagefolder", num_classes=10, image_size=32)
    bare = str(base / "teacher_timm.pth")  # timm's format: the bare network's keys
    torch.save(teacher.model.state_dict(), bare)
    return {"base": base, "root": root, "bare": bare}


def tiny(cfg, world, name):
    d = cfg["data"]
    lists = bool(d.get("train_list"))
    cfg["data"] = {"dataset": "imagefolder", "root": world["root"], "num_classes": 10, "image_size": 32,
                   "batch_size": 10, "train_subset": 10, "test_subset": 6, "workers": 0,
                   "augment": d["augment"], "drop_last": d.get("drop_last", False)}
    if lists:
        cfg["data"].update(train_list=str(world["base"] / "train.txt"),
                           val_list=str(world["base"] / "val.txt"))
    cfg["run"] = {"name": name, "seed": 0, "device": "cpu", "progress": False,
                  "out_dir": str(world["base"] / "runs")}
    cfg["model"] = {"arch": TINY_TIMM}
    cfg["optim"] = {**cfg["optim"], "epochs": 1, "warmup_epochs": 0, "milestones": []}
    if "teacher" in cfg:  # the ImageNet-LT baselines (objective ce) train without one
        cfg["teacher"] = {"checkpoint": world["bare"], "arch": TINY_TIMM}
    return cfg, lists


def finished_run(world):
    """A finished advtrain run of the tiny architecture: the self-distillation teacher."""
    from advtrain.train.loop import fit

    path = world["base"] / "runs" / "teacher_run" / "last.pt"
    if not path.exists():
        cfg = {"run": {"name": "teacher_run", "seed": 0, "device": "cpu", "progress": False,
                       "out_dir": str(world["base"] / "runs")},
               "data": {"dataset": "imagefolder", "root": world["root"], "num_classes": 10,
                        "image_size": 32, "batch_size": 10, "train_subset": 10, "test_subset": 6},
               "model": {"arch": TINY_TIMM}, "objective": {"name": "pgd_at"},
               "attack": {"schedule": "fixed", "steps": 1, "step_size": "2/255", "ramp": False},
               "optim": {"epochs": 1, "lr": 0.05}, "eval": {"test_pgd_steps": 0}}
        with one_thread():
            fit(cfg)
    return str(path)


@pytest.mark.parametrize("path", KD, ids=[os.path.basename(p) for p in KD])
def test_kd_config_trains_one_step_of_a_tiny_variant(path, world):
    from advtrain.train.loop import fit

    name = os.path.basename(path)[:-len(".yaml")]
    with open(path) as f:
        raw = yaml.safe_load(f)
    cfg, lists = tiny(raw, world, name)
    if "teacher" in raw and raw["teacher"]["arch"] == raw["model"]["arch"]:  # self-distillation
        cfg["teacher"] = {"checkpoint": finished_run(world)}  # arch from the run's checkpoint
    with one_thread():
        run_dir = fit(cfg)
    state = torch.load(os.path.join(run_dir, "last.pt"), weights_only=True)
    assert state["config"]["objective"] == {**state["config"]["objective"], **raw["objective"]}
    assert state["step"] == 1  # one optimizer step (train_subset 10, batch 10)
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        row = next(csv.DictReader(f))
    assert math.isfinite(float(row["loss"])) and float(row.get("ce") or row["loss"]) > 0
    assert os.path.exists(os.path.join(run_dir, "class_counts.csv")) == lists
    if lists:
        assert row["test_few"] != ""
