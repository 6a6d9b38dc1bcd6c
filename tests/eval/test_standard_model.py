"""A model trained with ``attack: {name: none}`` (standard training): its card says so, its sidecar
records the training attack from the checkpoint's config, and near-zero robust accuracy is not
called an attack failure (no ``unreliable`` card)."""
from __future__ import annotations

import json

import numpy as np
import torch

from advtrain.cli import main
from advtrain.eval.cards import card_fields, CardInfo
from advtrain.eval.sanity import flag, standard_model
from advtrain.hub.loader import training_record
from advtrain.models import create_model

N = 8
CLEAN = {"objective": {"name": "ce"}, "attack": {"name": "none", "eps": 8 / 255, "norm": "Linf"}}


def test_training_record_from_the_checkpoint_config():
    assert training_record(CLEAN) == {"objective": "ce", "attack": "none", "eps": 8 / 255,
                                      "norm": "Linf", "adversarially_trained": False}
    # checkpoints from before the attack registry trained PGD
    old = training_record({"objective": {"name": "trades"}, "attack": {"eps": 8 / 255}})
    assert old["attack"] == "pgd" and old["adversarially_trained"] is True
    assert training_record(None) is None


def _doubt():
    return [flag("autoattack-check", "there are 3 points with zero gradient!"),
            flag("partial-classes", "8 images cover 4 classes")]


def test_attack_doubts_on_a_standard_model_at_zero_robust_accuracy_are_expected():
    clean = training_record(CLEAN)
    flags = standard_model(_doubt(), 0.0, clean)
    assert flags[0]["code"] == "autoattack-check" and "not an attack failure" in flags[0]["expected"]
    assert "expected" not in flags[1]
    # an adversarially trained model, or a standard one that keeps real robust accuracy: untouched
    adv = training_record({"objective": {"name": "ce"}, "attack": {"name": "pgd"}})
    assert standard_model(_doubt(), 0.0, adv) == _doubt()
    assert standard_model(_doubt(), 0.2, clean) == _doubt()
    assert standard_model(_doubt(), 0.0, None) == _doubt()


def test_card_is_not_unreliable_for_expected_flags():
    from advtrain.eval.settings import EvalSettings, EvalResult

    settings = EvalSettings(norm="Linf", eps=8 / 255, version="custom", attacks=("apgd-ce",))
    info = CardInfo(name="Std", dataset="cifar10", threat_model="Linf", architecture="WRN")

    def result(flags):
        return EvalResult(settings=settings, clean_acc=0.9, robust_acc=0.0, n_ex=N, device="cpu",
                          per_attack={"clean": 0.9, "apgd-ce": 0.0}, attacks=["apgd-ce"], flags=flags)

    assert card_fields(result(_doubt()), info)["unreliable"] is True
    clean = standard_model(_doubt(), 0.0, training_record(CLEAN))
    assert card_fields(result(clean), info)["unreliable"] is False


def test_eval_card_and_sidecar_of_a_standard_model(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("wrn-10-1", dataset="cifar10").eval()
    images = np.random.default_rng(0).integers(0, 256, size=(N, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        labels = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
    np.savez(tmp_path / "test.npz", image=images, label=labels)
    torch.save({"model": model.state_dict(), "arch": "wrn-10-1", "dataset": "cifar10",
                "num_classes": 10, "config": CLEAN}, tmp_path / "clean.pt")
    rc = main(["eval", str(tmp_path / "clean.pt"), "--dataset", "cifar10", "--data-npz",
               str(tmp_path / "test.npz"), "--n-ex", str(N), "--version", "custom", "--attacks",
               "apgd-ce", "--n-iter", "2", "--batch-size", str(N), "--no-sanity", "--quiet",
               "--out", str(tmp_path / "cards"), "--name", "Std"])
    assert rc == 0, capsys.readouterr()
    card = tmp_path / "cards" / "cifar10" / "Linf" / "Std.json"
    data = json.loads(card.read_text())
    assert "not adversarially trained" in data["footnote"]
    side = json.loads(card.with_suffix(".advtrain.json").read_text())
    assert side["training"]["attack"] == "none" and side["training"]["adversarially_trained"] is False
