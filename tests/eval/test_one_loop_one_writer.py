"""Issue 22.2: every evaluation -- common corruptions, Linf/L2 AutoAttack (with PGD-K and an eps
sweep), ImageFolder data -- goes through the one accuracy loop (``advtrain.eval.accuracy.correct``)
and the one card writer (``advtrain.eval.cards.write_card``). Each is replaced by a spy; the
corruptions spy also changes the loop's answer, which must then be what the card says."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advtrain.cli import main


@pytest.fixture
def spies(monkeypatch):
    """Record every call of the one accuracy loop and the one card writer (calling through unless
    ``calls["all_correct"]`` is set: then every example counts as correct)."""
    from advtrain.eval import accuracy, cards

    calls = {"correct": [], "write_card": [], "all_correct": False}
    real_correct, real_write = accuracy.correct, cards.write_card

    def correct(model, x, y, **kw):
        calls["correct"].append(kw)
        if calls["all_correct"]:
            return torch.ones(len(y), dtype=torch.bool)
        return real_correct(model, x, y, **kw)

    def write_card(result, info, **kw):
        calls["write_card"].append((result, info))
        return real_write(result, info, **kw)

    monkeypatch.setattr(accuracy, "correct", correct)
    monkeypatch.setattr(cards, "write_card", write_card)
    return calls


def _cifar_checkpoint(tmp_path, n=6):
    from advtrain.models import create_model

    torch.manual_seed(0)
    model = create_model("wrn-10-1", dataset="cifar10").eval()
    torch.save({"model": model.state_dict(), "arch": "wrn-10-1", "dataset": "cifar10",
                "num_classes": 10}, tmp_path / "tiny.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "test.npz", image=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
             label=np.arange(n) % 10)
    return tmp_path / "tiny.pt"


def test_corruptions_use_the_one_loop_and_writer(spies, tmp_path):
    from advtrain.eval.corruptions import SEVERITIES, corruption_names
    from advtrain.eval.settings import CorruptionsResult

    ckpt = _cifar_checkpoint(tmp_path)
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for c in corruption_names():
        np.save(folder / f"{c}.npy", rng.integers(0, 256, (5 * 2, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", np.array([3, 7] * 5, dtype=np.uint8))
    spies["all_correct"] = True  # the card must report what the loop answered
    assert main(["eval", str(ckpt), "--dataset", "cifar10", "--threat-model", "corruptions",
                 "--data-root", str(tmp_path), "--device", "cpu", "--out", str(tmp_path / "mi"),
                 "--name", "C"]) == 0
    assert len(spies["correct"]) == len(corruption_names()) * len(SEVERITIES) + 1  # + clean
    (result, info), = spies["write_card"]
    assert isinstance(result, CorruptionsResult) and info.threat_model == "corruptions"
    card = json.loads((tmp_path / "mi" / "cifar10" / "corruptions" / "C.json").read_text())
    assert card["corruptions_acc"] == card["clean_acc"] == "100.00"
    side = json.loads((tmp_path / "mi" / "cifar10" / "corruptions" / "C.advtrain.json").read_text())
    assert side["per_severity"] == {str(s): 1.0 for s in SEVERITIES}
    assert side["full_standard"] is False and side["test_images"] == 10000


@pytest.mark.parametrize("norm, eps", [("Linf", 8 / 255), ("L2", 0.5)])
def test_attack_eval_pgd_and_sweep_use_the_one_loop_and_writer(spies, tmp_path, norm, eps):
    from attacks import PGD

    from advtrain.eval.settings import EvalResult
    from advtrain.eval.sweep import Restarts

    ckpt = _cifar_checkpoint(tmp_path)
    assert main(["eval", str(ckpt), "--dataset", "cifar10", "--data-npz", str(tmp_path / "test.npz"),
                 "--n-ex", "6", "--norm", norm, "--version", "custom", "--attacks", "apgd-ce",
                 "--n-iter", "1", "--pgd-steps", "1", "--eps-sweep", "0", "--sweep-steps", "1",
                 "--sweep-restarts", "1", "--no-sanity", "--quiet", "--device", "cpu",
                 "--out", str(tmp_path / "mi"), "--name", "A"]) == 0
    kinds = [type(kw.get("attack")).__name__ if kw.get("attack") else kw.get("desc")
             for kw in spies["correct"]]
    # the clean pass, PGD-K, and the sweep at eps 0 and at the headline eps (the default one)
    assert kinds == ["clean", PGD.__name__, Restarts.__name__, Restarts.__name__]
    (result, info), = spies["write_card"]
    assert isinstance(result, EvalResult) and info.threat_model == norm
    assert result.settings.eps == pytest.approx(eps)  # the dataset's default for the norm


def test_imagefolder_eval_uses_the_one_loop_and_writer(spies, tmp_path):
    from folder_helpers import TINY_TIMM, make_image_folder

    from advtrain.models import create_model

    root = make_image_folder(tmp_path / "d", n_classes=2, per_class=(0, 2), size=32)
    torch.manual_seed(0)
    model = create_model(TINY_TIMM, num_classes=2, image_size=32)
    torch.save({"model": model.state_dict(), "arch": TINY_TIMM, "dataset": "imagefolder",
                "num_classes": 2, "config": {"data": {"image_size": 32}}}, tmp_path / "f.pt")
    assert main(["eval", str(tmp_path / "f.pt"), "--dataset", "imagefolder", "--data-root", root,
                 "--version", "custom", "--attacks", "apgd-ce", "--n-iter", "1", "--no-sanity",
                 "--quiet", "--device", "cpu", "--out", str(tmp_path / "mi"), "--name", "F"]) == 0
    assert [kw.get("desc") for kw in spies["correct"]] == ["clean"]
    (result, info), = spies["write_card"]
    assert info.dataset == "imagefolder" and info.test_images == 4 and result.n_ex == 4
