"""No silent wrong number from the training data (issue 23.7): an ImageFolder run records its
class list and image list; a resume refuses a changed image list, an evaluation refuses a folder
whose classes differ (naming the first), training refuses a val/ whose classes differ from
train/, and a run on its own test data says so at train time."""
from __future__ import annotations

import os
import shutil
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from folder_helpers import folder_config  # noqa: E402
from trainer_helpers import one_thread, tiny_config  # noqa: E402

from advtrain.cli import main  # noqa: E402
from advtrain.errors import AdvtrainError  # noqa: E402
from advtrain.train.loop import fit  # noqa: E402

FAST = ["--version", "custom", "--attacks", "apgd-ce", "--n-iter", "1", "--no-sanity", "--quiet",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A 2-epoch ImageFolder run stopped after epoch 1 (kept pristine: tests copy it)."""
    root = tmp_path_factory.mktemp("folder_run")
    cfg = folder_config(root, "pgd_at", data={"test_subset": 4})
    with one_thread():
        run = fit(cfg, run_dir=str(root / "run"), stop_after=1)
    return root, cfg, run


def _copy(folder_run, tmp_path):
    root, cfg, run = folder_run
    data = shutil.copytree(cfg["data"]["root"], tmp_path / "data")
    shutil.copytree(run, tmp_path / "run")
    cfg = {**cfg, "data": {**cfg["data"], "root": str(data)}}
    return cfg, str(tmp_path / "run"), data


def test_checkpoint_records_class_and_image_list(folder_run):
    root, cfg, run = folder_run
    ckpt = torch.load(os.path.join(run, "last.pt"), weights_only=True)
    images = ckpt["train_images"]
    assert images["classes"] == sorted(os.listdir(os.path.join(cfg["data"]["root"], "train")))
    assert images["files"] == 30 and len(images["list_sha256"]) == 64
    assert ckpt["flags"] == []


@pytest.mark.parametrize("change", ["remove", "add"])
def test_resume_refuses_a_changed_image_list(folder_run, tmp_path, change):
    cfg, run, data = _copy(folder_run, tmp_path)
    folder = data / "train" / "c04"
    if change == "remove":
        os.remove(folder / "1.jpg")
    else:
        shutil.copy(folder / "1.jpg", folder / "9.jpg")
    with one_thread(), pytest.raises(AdvtrainError, match="training images under .* changed "
                                                          "since the run started") as e:
        fit(cfg, run_dir=run, resume=True, force=True)  # the copy's data.root differs: --force
    assert len(str(e.value).splitlines()) == 1
    assert torch.load(os.path.join(run, "last.pt"), weights_only=True)["epoch"] == 1  # untouched


def test_resume_with_the_same_images_goes_on(folder_run, tmp_path):
    """The same images under a moved root: the list is relative, the resume goes on."""
    cfg, run, _ = _copy(folder_run, tmp_path)
    with one_thread():
        fit(cfg, run_dir=run, resume=True, force=True)
    assert torch.load(os.path.join(run, "last.pt"), weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("rename,first", [("c03", "c03x"), ("c00", "zz")])
def test_eval_refuses_renamed_or_reordered_classes(folder_run, tmp_path, capsys, rename, first):
    """Renamed in place (c03 -> c03x) or moved to the end (c00 -> zz, every label shifts)."""
    cfg, run, data = _copy(folder_run, tmp_path)
    os.rename(data / "val" / rename, data / "val" / first)
    out = tmp_path / "mi"
    rc = main(["eval", os.path.join(run, "last.pt"), "--dataset", "imagefolder", "--data-root",
               str(data), "--out", str(out), *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    index = sorted(os.listdir(data / "train")).index(rename)
    assert f"class {index} is '{rename}'" in err and f"but '{first if rename == 'c03' else 'c01'}'" \
        in err, err
    assert not out.exists()


def test_training_refuses_a_val_folder_with_other_classes(folder_run, tmp_path):
    cfg, _, data = _copy(folder_run, tmp_path)
    os.rename(data / "val" / "c05", data / "val" / "c05b")
    with one_thread(), pytest.raises(AdvtrainError, match="class 5 is 'c05' in .*train but 'c05b'"):
        fit(cfg, run_dir=str(tmp_path / "new"))


def test_training_on_the_test_file_is_flagged_at_train_time(tmp_path, capfd):
    cfg = tiny_config(str(tmp_path), optim={"epochs": 1})
    cfg["data"]["test_npz"] = cfg["data"]["train_npz"]
    with one_thread():
        run = fit(cfg, run_dir=str(tmp_path / "run"))
    err = capfd.readouterr().err
    assert "warning [trained-on-test-images]" in err and cfg["data"]["train_npz"] in err
    assert torch.load(os.path.join(run, "last.pt"), weights_only=True)["flags"] == [
        "trained-on-test-images"]


def test_model_that_cannot_take_the_data_fails_before_training(tmp_path):
    """A CIFAR WideResNet (a fixed 8x8 pooling: 32 px) on 64 px ImageFolder images: one line
    before any image is decoded or step taken."""
    cfg = folder_config(tmp_path, "pgd_at", model={"arch": "wrn-10-1"},
                        data={"image_size": 64}, optim={"epochs": 1})
    with one_thread(), pytest.raises(AdvtrainError, match="model.arch wrn-10-1 cannot take one "
                                                          "imagefolder image of 3x64x64"):
        fit(cfg, run_dir=str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "last.pt")
