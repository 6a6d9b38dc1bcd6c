"""List-file datasets (ImageNet-LT: ``data.train_list`` / ``data.val_list``): 'relative/path label'
lines under data.root, hostile lists refused in one line, per-class counts and the many / medium /
few-shot accuracies of a run."""
from __future__ import annotations

import csv
import os

import pytest
import torch

from advtrain import config as C
from advtrain.data import imagefolder as F
from advtrain.errors import DataError, InputError

from folder_helpers import folder_config, make_image_folder
from trainer_helpers import one_thread


def write_list(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("lt") / "data", n_classes=4, per_class=(3, 2), size=16)
    return root


def test_list_is_read_in_order_relative_to_the_root(tree, tmp_path):
    lines = ["train/c02/1.jpg 2", "", "train/c00/0.jpg 0", "  val/c03/0.jpg   3  ", "train/c02/0.jpg 2"]
    samples = F.read_list(tree, write_list(tmp_path / "l.txt", lines), 4)
    assert samples == [(os.path.join(os.path.realpath(tree), p), k) for p, k in
                       (("train/c02/1.jpg", 2), ("train/c00/0.jpg", 0), ("val/c03/0.jpg", 3),
                        ("train/c02/0.jpg", 2))]
    assert F.class_counts(samples, 4) == [1, 0, 2, 1]


@pytest.mark.parametrize("lines,match", [
    (["train/c00/0.jpg 0", "train/c00/9.jpg 0", "train/c01/9.jpg 1"], "2 of the 3 images .* missing"),
    (["train/c00/0.jpg 4"], r"line 1: label 4 is outside \[0, 4\)"),
    (["train/c00/0.jpg -1"], r"label -1 is outside"),
    (["train/c00/0.jpg zero"], "is not an integer"),
    (["train/c00/0.jpg"], "expected 'relative/path label'"),
    (["train/c00/0.jpg 0", "../outside.jpg 1"], "line 2: path '../outside.jpg' leaves data.root"),
    (["train/../../outside.jpg 1"], "leaves data.root"),
    (["ABS 0"], "leaves data.root"),
    (["train/c00/notes.txt 0"], "is not an image file"),
    ([], "lists no images"),
])
def test_hostile_list_lines_are_one_line_errors(tree, tmp_path, lines, match):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x")
    lines = [ln.replace("ABS", str(outside)) for ln in lines]
    with pytest.raises(DataError, match=match) as info:
        F.read_list(tree, write_list(tmp_path / "l.txt", lines), 4)
    assert "\n" not in str(info.value)


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root = make_image_folder(tmp_path / "data", n_classes=2, per_class=(1, 1), size=16)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "x.jpg").write_bytes(b"x")
    os.symlink(secret, os.path.join(root, "train", "link"))
    with pytest.raises(DataError, match="outside data.root .a symlink"):
        F.read_list(root, write_list(tmp_path / "l.txt", ["train/link/x.jpg 0"]), 2)
    os.symlink(os.path.join(root, "train", "c00"), os.path.join(root, "train", "inside"))
    assert len(F.read_list(root, write_list(tmp_path / "m.txt", ["train/inside/0.jpg 0"]), 2)) == 1


def test_oversized_missing_and_binary_lists_are_refused(tree, tmp_path, monkeypatch):
    path = write_list(tmp_path / "l.txt", ["train/c00/0.jpg 0"] * 50)
    monkeypatch.setattr(F, "MAX_LIST_BYTES", 200)
    with pytest.raises(DataError, match="MiB limit for a list file"):
        F.read_list(tree, path, 4)
    monkeypatch.undo()
    with pytest.raises(DataError, match="data.val_list .*nothing.txt not found"):
        F.read_list(tree, str(tmp_path / "nothing.txt"), 4, "data.val_list")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00train 0")
    with pytest.raises(DataError, match="not UTF-8"):
        F.read_list(tree, str(tmp_path / "bin.txt"), 4)
    with pytest.raises(InputError, match="needs data.root"):
        F.read_list(None, path, 4)


def test_list_keys_are_refused_outside_folder_datasets():
    with pytest.raises(InputError, match="data.train_list.*imagefolder/imagenet datasets only"):
        C.from_dict({"data": {"dataset": "cifar10", "train_list": "x.txt"}, "model": {"arch": "wrn-10-1"}})


def test_shot_groups_follow_the_lt_thresholds():
    assert [F.shot_group(c) for c in (5, 19, 20, 100, 101, 1280)] == \
        ["few", "few", "medium", "medium", "many", "many"]
    from advtrain.train.metrics import shot_accuracy

    counts = [150, 50, 5, 30]  # many, medium, few, medium
    y = torch.tensor([0, 0, 1, 1, 2, 3, 3, 3])
    pred = torch.tensor([0, 1, 1, 1, 0, 3, 0, 0])
    out = shot_accuracy(pred, y, counts)
    assert out["test_many"] == pytest.approx(0.5)
    assert out["test_medium"] == pytest.approx((1.0 + 1 / 3) / 2)  # mean of per-class accuracies
    assert out["test_few"] == pytest.approx(0.0)
    assert shot_accuracy(pred[:2], y[:2], counts)["test_few"] is None


def test_run_on_list_files_logs_counts_and_shot_accuracies(tmp_path, capsys):
    from advtrain.train.loop import fit

    cfg = folder_config(tmp_path, method="trades", optim={"epochs": 1})
    root = cfg["data"]["root"]
    train = [f"train/c{k:02d}/{i}.jpg {k}" for k in range(10) for i in range(3 if k < 5 else 1)]
    val = [f"val/c{k:02d}/{i}.jpg {k}" for k in range(10) for i in range(2)]
    cfg["data"].update(train_list=write_list(tmp_path / "train.txt", train),
                       val_list=write_list(tmp_path / "val.txt", val), test_subset=20, batch_size=10)
    with one_thread():
        run_dir = fit(cfg)
    out = capsys.readouterr().out
    assert "training list: 20 images in 10 classes (1 to 3 per class): 0 many-shot (> 100 images), " \
           "0 medium-shot, 10 few-shot (< 20)" in out
    epoch_line = next(ln for ln in out.splitlines() if ln.startswith("epoch 1/1"))
    assert "(many-shot n/a, medium-shot n/a, few-shot " in epoch_line
    with open(os.path.join(run_dir, "class_counts.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["train_images"]) for r in rows] == [3] * 5 + [1] * 5
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        row = next(csv.DictReader(f))
    assert row["test_many"] == row["test_medium"] == ""
    assert float(row["test_few"]) == pytest.approx(float(row["test_clean"]))  # 2 images per class
    assert os.path.isdir(root)
