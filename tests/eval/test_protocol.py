"""The model against the protocol it is evaluated under, before anything runs (issue 23.3):
threat model vs dataset, class count and input size, each one line, exit 2, nothing written."""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from folder_helpers import TINY_TIMM, make_image_folder  # noqa: E402
from helpers import tiny_checkpoint  # noqa: E402

from advtrain.cli import main  # noqa: E402
from advtrain.errors import InputError  # noqa: E402
from advtrain.eval.protocol import check_model  # noqa: E402

FAST = ["--version", "custom", "--attacks", "apgd-ce", "--n-iter", "1", "--no-sanity", "--quiet",
        "--device", "cpu"]


def _fails(argv, capsys, needle, out):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert not out.exists() or not any(out.rglob("*.json")), "a refused eval wrote a card"


def test_corruptions_needs_a_corrupted_test_set(tmp_path, capsys):
    out = tmp_path / "mi"
    _fails(["eval", str(tiny_checkpoint(tmp_path / "m.pt")), "--dataset", "imagenet",
            "--threat-model", "corruptions", "--data-root", str(tmp_path), "--out", str(out)],
           capsys, "imagenet has no common-corruptions release", out)


def _imagefolder_checkpoint(path, classes: int, size: int = 32):
    from advtrain.models import create_model

    model = create_model(TINY_TIMM, num_classes=classes, image_size=size)
    torch.save({"model": model.state_dict(), "arch": TINY_TIMM, "dataset": "imagefolder",
                "num_classes": classes, "config": {"data": {"image_size": size}}}, path)
    return str(path)


def test_three_class_folder_model_under_the_imagenet_protocol(tmp_path, capsys):
    """Was an IndexError (and with --no-sanity an ImageNet card of 0.00 / 0.00)."""
    ckpt = _imagefolder_checkpoint(tmp_path / "m3.pt", 3)
    out = tmp_path / "mi"
    _fails(["eval", ckpt, "--dataset", "imagenet", "--data-root", str(tmp_path / "nothing"),
            "--n-ex", "2", "--out", str(out), *FAST],
           capsys, "gives 3 class scores but imagenet is scored on 1000 classes", out)


def test_folder_model_against_a_folder_of_other_class_count(tmp_path, capsys):
    root = make_image_folder(tmp_path / "d", n_classes=4, per_class=(0, 1), size=40)
    ckpt = _imagefolder_checkpoint(tmp_path / "m3.pt", 3)
    out = tmp_path / "mi"
    _fails(["eval", ckpt, "--dataset", "imagefolder", "--data-root", root, "--out", str(out),
            *FAST], capsys, "gives 3 class scores but imagefolder is scored on 4", out)


class _FixedSize(torch.nn.Module):
    """A classifier whose linear head only fits 3x24x24 inputs (a model for another size)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 24 * 24, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_input_size_mismatch_is_one_line():
    model = _FixedSize().train()
    with pytest.raises(InputError, match="cannot take one cifar10 image of 3x32x32") as e:
        check_model(model, "cifar10", classes=10)
    assert len(str(e.value).splitlines()) == 1
    assert model.training  # mode restored
    check_model(model, "cifar10", classes=10, image_size=24)  # the size it was built for


def test_the_probe_changes_no_state():
    from advtrain.models import create_model

    model = create_model("wrn-10-1", dataset="cifar10").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_model(model, "cifar10", classes=10)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched
    assert model.training


def test_recorded_image_size_is_bounded_before_building(tmp_path, capsys):
    """A checkpoint recording image_size 60000 (its weights fit any size: a CNN) was built and
    fed 60000 px images until memory ran out; now one line before anything is built."""
    ckpt = _imagefolder_checkpoint(tmp_path / "m.pt", 3)
    raw = torch.load(ckpt, weights_only=True)
    raw["config"]["data"]["image_size"] = 60000
    torch.save(raw, ckpt)
    out = tmp_path / "mi"
    _fails(["eval", ckpt, "--dataset", "imagefolder", "--data-root", str(tmp_path), "--out",
            str(out), *FAST], capsys, "recorded image_size = 60000 must be an integer in [8, 2048]",
           out)


@pytest.mark.parametrize("size", [60000, 4])
def test_config_image_size_is_bounded(tmp_path, size):
    from advtrain import config as C
    from folder_helpers import folder_config

    cfg = folder_config(tmp_path, data={"image_size": size})
    with pytest.raises(InputError, match="image_size = .* must be an integer in \\[8, 2048\\]"):
        C.from_dict(cfg)
