"""Issue 24.1: a standard AutoAttack card is "full" only on the protocol's whole test set (10,000
CIFAR images, RobustBench's 5,000-image ImageNet list), never because the file given was short."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advtrain.eval import cards

#: the protocols' sizes, written here from their sources (CIFAR-10/100 test split; RobustBench's
#: helper_files/imagenet_test_image_ids.txt has 5,000 lines)
CIFAR_TEST, IMAGENET_LIST = 10000, 5000


def _result(n_ex, robust=0.5, **settings):
    from advtrain.eval.settings import EvalResult, EvalSettings

    s = EvalSettings(**settings)
    return EvalResult(settings=s, clean_acc=0.75, robust_acc=robust,
                      per_attack={"clean": 0.75, "apgd-ce": robust}, attacks=["apgd-ce", "apgd-t",
                                                                              "fab-t", "square"],
                      n_ex=n_ex, device="cpu")


def _info(dataset="cifar10", **kw):
    return cards.CardInfo(name="M", dataset=dataset, threat_model="Linf", architecture="A", **kw)


@pytest.mark.parametrize("dataset, protocol", [("cifar10", CIFAR_TEST), ("cifar100", CIFAR_TEST),
                                               ("imagenet", IMAGENET_LIST)])
def test_test_images_is_the_protocol_not_the_file(dataset, protocol):
    assert _info(dataset, test_images=50).test_images == protocol
    assert _info(dataset).test_images == protocol


@pytest.mark.parametrize("dataset, n_full", [("cifar10", CIFAR_TEST), ("imagenet", IMAGENET_LIST)])
def test_short_file_is_partial_with_footnote(tmp_path, dataset, n_full):
    """A standard run on a 50-image file: partial, the footnote says 50 of the protocol's images,
    'reported' is not the measured number; on the whole protocol it is full."""
    card, side = cards.write_card(_result(50), _info(dataset, test_images=50), out_dir=tmp_path)
    data, meta = json.loads(card.read_text()), json.loads(side.read_text())
    assert "reported" not in data and data["autoattack_acc"] == "50.00"
    assert data["footnote"].endswith(f"on 50 of {n_full} test images.")
    assert meta["full_standard"] is False and meta["test_images"] == n_full
    card, side = cards.write_card(_result(n_full), _info(dataset, test_images=50), out_dir=tmp_path)
    data, meta = json.loads(card.read_text()), json.loads(side.read_text())
    assert data["reported"] == data["autoattack_acc"] and "footnote" not in data
    assert meta["full_standard"] is True


def test_imagefolder_has_no_protocol_and_needs_its_size():
    from advtrain.errors import InputError

    assert _info("imagefolder", test_images=123).test_images == 123
    with pytest.raises(InputError, match="test_images"):
        _info("imagefolder")


def test_report_does_not_trust_an_old_full_verdict_on_a_short_file(tmp_path):
    """A sidecar written before the fix says full_standard true for 50 images: the report
    re-checks the number of images against the protocol."""
    from advtrain.eval.report import partial_reason

    side = {"dataset": "cifar10", "full_standard": True, "n_ex": 50, "test_images": 50,
            "version": "standard"}
    assert "50 of 10000" in partial_reason(side, "Linf")
    assert partial_reason({**side, "n_ex": CIFAR_TEST}, "Linf") == ""


def test_cli_standard_eval_on_a_short_file_is_partial(tmp_path, capsys):
    """The issue's case end to end: ``eval --version standard`` on a short test.npz."""
    from advtrain.cli import main
    from advtrain.models import create_model

    torch.manual_seed(0)
    model = create_model("wrn-10-1", dataset="cifar10").eval()
    images = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        labels = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).argmax(1)
    np.savez(tmp_path / "test.npz", image=images, label=labels.numpy())
    torch.save(model.state_dict(), tmp_path / "m.pt")
    rc = main(["eval", str(tmp_path / "m.pt"), "--arch", "wrn-10-1", "--dataset", "cifar10",
               "--data-npz", str(tmp_path / "test.npz"), "--n-ex", "8", "--batch-size", "8",
               "--no-sanity", "--quiet", "--out", str(tmp_path / "mi"), "--name", "Short"])
    assert rc == 0, capsys.readouterr().err
    card = tmp_path / "mi" / "cifar10" / "Linf" / "Short.json"
    data = json.loads(card.read_text())
    side = json.loads(card.with_name("Short.advtrain.json").read_text())
    assert side["full_standard"] is False and side["data"]["test_images"] == 8
    assert "reported" not in data and data["footnote"].endswith("on 8 of 10000 test images.")
