"""Issue 24.5: artefacts a user can send or publish. Sidecars hold no absolute path of the machine
(paths relative to the card or file names, plus hashes); ``advtrain export --format hub`` writes a
folder that huggingface_hub's standard loading reads back offline with the same logits."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from advtrain.cli import main
from advtrain.models import create_model

#: an absolute POSIX path inside a JSON string (not a URL's //, not 8/255)
ABSOLUTE = re.compile(r'(?<![\w:/.~-])/(?!/)[^\s"\'()\[\],;]+')


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("share")
    torch.manual_seed(0)
    model = create_model("wrn-10-1", dataset="cifar10").eval()
    images = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    (tmp / "data").mkdir()
    np.savez(tmp / "data" / "test.npz", image=images, label=np.arange(8) % 10)
    (tmp / "runs" / "a").mkdir(parents=True)
    torch.save({"model": model.state_dict(), "arch": "wrn-10-1", "dataset": "cifar10",
                "num_classes": 10}, tmp / "runs" / "a" / "last.pt")
    out = tmp / "proj" / "model_info"
    argv = ["eval", str(tmp / "runs" / "a" / "last.pt"), "--dataset", "cifar10", "--data-npz",
               str(tmp / "data" / "test.npz"), "--n-ex", "8", "--version", "custom",
               "--attacks", "apgd-ce", "--n-iter", "2", "--batch-size", "8", "--sanity-n", "4",
               "--sanity-steps", "1", "--quiet", "--out", str(out), "--name", "Share",
               "--footnote", "Trained | by me.", "--eps-sweep", "0,8/255", "--sweep-steps", "1",
               "--sweep-restarts", "1"]
    import sys

    saved, sys.argv = sys.argv, ["advtrain", *argv]  # the command line the sidecar records
    try:
        rc = main(argv)
    finally:
        sys.argv = saved
    assert rc == 0
    return tmp, model, out / "cifar10" / "Linf" / "Share.json"


def test_sidecar_holds_no_absolute_path(world):
    tmp, _, card = world
    text = card.with_name("Share.advtrain.json").read_text()
    assert str(tmp) not in text and "/tmp" not in text
    assert not ABSOLUTE.findall(text), ABSOLUTE.findall(text)[:3]
    side = json.loads(text)
    # data and checkpoint by file name, with their hashes (both lie outside the card's project)
    assert side["data"]["path"] == "test.npz" and len(side["data"]["sha256"]) == 64
    assert side["checkpoint"]["path"] == "last.pt" and len(side["checkpoint"]["sha256"]) == 64
    assert "eval last.pt" in side["command"] and "--data-npz test.npz" in side["command"]
    assert "--out .." in side["command"]  # the output folder, relative to the card


def test_portable_path_keeps_nearby_paths_relative(tmp_path):
    from advtrain.io.paths import portable

    card_dir = tmp_path / "proj" / "model_info" / "cifar10" / "Linf"
    got = portable({"a": f"x {tmp_path}/proj/runs/b/last.pt y", "b": "8/255 https://a.org/b/c",
                    "c": [f"{tmp_path}/elsewhere/data.npz"]}, card_dir)
    assert got == {"a": "x ../../../runs/b/last.pt y", "b": "8/255 https://a.org/b/c",
                   "c": ["data.npz"]}


def test_hub_export_round_trips_offline(world, tmp_path, monkeypatch, capsys):
    pytest.importorskip("huggingface_hub")
    tmp, model, card = world
    out = tmp_path / "hub" / "Share"
    rc = main(["export", str(tmp / "runs" / "a" / "last.pt"), "--name", "Share", "--dataset",
               "cifar10", "--format", "hub", "--out", str(out), "--card", str(card)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert json.loads((out / "config.json").read_text()) == {"arch": "wrn-10-1",
                                                             "dataset": "cifar10", "options": {}}
    readme = (out / "README.md").read_text()
    data = json.loads(card.read_text())
    assert f"| clean accuracy (%) | {data['clean_acc']} |" in readme
    assert f"| AutoAttack robust accuracy (%) | {data['autoattack_acc']} |" in readme
    assert "Trained \\| by me." in readme and "on 8 of 10000 test images" in readme
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from advtrain.hub.hf import AdvtrainModel

    loaded = AdvtrainModel.from_pretrained(str(out))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-6, atol=1e-6)
    assert not loaded.training


def test_hub_loading_is_strict(world, tmp_path, capsys):
    pytest.importorskip("huggingface_hub")
    from safetensors.torch import load_file, save_file

    tmp, _, _ = world
    out = tmp_path / "h"
    assert main(["export", str(tmp / "runs" / "a" / "last.pt"), "--name", "S", "--dataset",
                 "cifar10", "--format", "hub", "--out", str(out)]) == 0
    assert "makes no robustness claim" in (out / "README.md").read_text()
    state = load_file(out / "model.safetensors")
    state.pop(sorted(state)[0])
    save_file(state, out / "model.safetensors")
    from advtrain.hub.hf import AdvtrainModel

    with pytest.raises(RuntimeError, match="Missing key"):
        AdvtrainModel.from_pretrained(str(out))


def test_hub_export_refuses_a_card_of_another_dataset(world, tmp_path, capsys):
    tmp, _, card = world
    rc = main(["export", str(tmp / "runs" / "a" / "last.pt"), "--name", "S", "--dataset",
               "cifar100", "--format", "hub", "--out", str(tmp_path / "h"), "--card", str(card)])
    err = capsys.readouterr().err
    assert rc == 2 and "is a 'cifar10' card but --dataset is 'cifar100'" in err
    assert not (tmp_path / "h").exists()
