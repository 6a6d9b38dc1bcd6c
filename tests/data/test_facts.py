"""Issue 22.4: one table of dataset facts. A row added to it (here monkeypatched into the one
table) reaches the loaders (npz source), the model registry, the card writer (test-set size ->
full/partial) and the eval defaults (eps per threat model, --n-ex)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from advtrain.data.facts import FACTS, DatasetFacts, dataset_names, facts
from advtrain.errors import DataError, InputError, UnknownNameError

N_TEST = 24  # the toy protocol's test-set size
TOY = DatasetFacts(name="toy4", classes=4, image_size=32, sources=("npz",), test_images=N_TEST,
                   eps={"Linf": "2/255", "L2": "0.25"}, mean=(0.5, 0.5, 0.5),
                   std=(0.25, 0.25, 0.25))


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """The toy row in the table, and an npz of N_TEST images with labels 0..3."""
    monkeypatch.setitem(FACTS, "toy4", TOY)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_TEST, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(N_TEST) % 4
    np.savez(tmp_path / "test.npz", image=images, label=labels)
    return tmp_path, images, labels


def test_table_holds_what_the_code_used_before():
    """The values the consumers held before the table (names.py, sources.py, cards.py,
    folder_eval.py, zoo.py, corruptions.py), written out here independently."""
    from advtrain.data.names import DATASET_MEAN, DATASET_STD, DATASETS

    assert dict(DATASETS) == {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "imagefolder": None}
    assert DATASET_MEAN["cifar10"] == (0.4914, 0.4822, 0.4465)
    assert DATASET_STD["cifar100"] == (0.2673, 0.2564, 0.2762)
    assert set(DATASET_MEAN) == {"cifar10", "cifar100"}
    assert [facts(d).test_images for d in ("cifar10", "cifar100", "imagenet")] == [10000, 10000, 5000]
    assert facts("cifar10").eps["Linf"] == "8/255" and facts("imagenet").eps["Linf"] == "4/255"
    assert facts("imagefolder").eps["Linf"] == "4/255" and facts("imagefolder").test_images is None
    assert dataset_names(robustbench=True) == ("cifar10", "cifar100", "imagenet")
    assert {d: facts(d).corruptions for d in dataset_names(corruptions=True)} == {
        "cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
    assert facts("cifar10").binary.files["train"] == tuple(f"data_batch_{i}.bin" for i in range(1, 6))
    assert facts("cifar100").torchvision.files == {"train": ("train",), "test": ("test",)}
    with pytest.raises(UnknownNameError, match="choices: cifar10, cifar100, imagefolder, imagenet"):
        facts("cifar1O")
    with pytest.raises(ValueError, match="binary"):  # a source kind without its layout
        DatasetFacts(name="x", classes=2, image_size=32, sources=("binary",))


def test_added_row_reaches_names_loaders_and_registry(toy):
    from advtrain.data import load_test_arrays, resolve_source
    from advtrain.data.names import DATASETS, check_dataset, num_classes
    from advtrain.hub.zoo import ZOO_DATASETS
    from advtrain.models import create_model

    tmp, images, labels = toy
    assert check_dataset("toy4") == "toy4" and num_classes("toy4") == DATASETS["toy4"] == 4
    assert "toy4" not in ZOO_DATASETS  # no RobustBench name: no zoo
    src = resolve_source("toy4", "test", root=str(tmp))  # {split}.npz under the data root
    assert (src.kind, src.path) == ("npz", str(tmp / "test.npz"))
    x, y = load_test_arrays("toy4", npz=str(tmp / "test.npz"))
    expected = torch.from_numpy(images.astype(np.float64) / 255).permute(0, 3, 1, 2)
    assert torch.allclose(x.double(), expected, atol=1e-7) and y.tolist() == labels.tolist()
    np.savez(tmp / "bad.npz", image=images, label=np.full(N_TEST, 4))  # class 4 of 4 classes
    with pytest.raises(DataError):
        load_test_arrays("toy4", npz=str(tmp / "bad.npz"))
    (tmp / "empty").mkdir()
    with pytest.raises(DataError, match="no local toy4 test data"):  # nothing to download
        resolve_source("toy4", "test", root=str(tmp / "empty"))
    model = create_model("wrn-10-1", dataset="toy4")
    assert model.num_classes == 4 and model(torch.rand(2, 3, 32, 32)).shape == (2, 4)


def test_added_row_sets_card_test_set_size(toy, tmp_path):
    from advtrain.eval import cards
    from advtrain.eval.settings import EvalResult, EvalSettings

    def result(n_ex):
        s = EvalSettings(norm="Linf", eps="2/255")
        return EvalResult(settings=s, clean_acc=0.5, robust_acc=0.25,
                          per_attack={"clean": 0.5, "apgd-ce": 0.25}, attacks=list(s.attacks or
                          ("apgd-ce", "apgd-t", "fab-t", "square")), n_ex=n_ex, device="cpu")

    info = cards.CardInfo(name="Toy", dataset="toy4", threat_model="Linf", architecture="x")
    assert info.test_images == N_TEST
    card, side = cards.write_card(result(N_TEST), info, out_dir=tmp_path / "full")
    assert json.loads(side.read_text())["full_standard"] is True
    assert json.loads(card.read_text())["reported"] == "25.00"  # measured: a full standard run
    card, side = cards.write_card(result(N_TEST - 4), info, out_dir=tmp_path / "part")
    assert json.loads(side.read_text())["full_standard"] is False
    assert json.loads(card.read_text())["footnote"].endswith(f"on {N_TEST - 4} of {N_TEST} test images.")
    with pytest.raises(InputError, match="no common-corruptions release"):
        cards.CardInfo(name="Toy", dataset="toy4", threat_model="corruptions", architecture="x")


def test_added_row_sets_eval_defaults(toy):
    from advtrain.cli.eval_model import resolve_defaults

    def defaults(**kw):
        args = argparse.Namespace(**{**dict(dataset="toy4", norm="Linf", eps=None, n_ex=None,
                                            data_npz=None), **kw})
        resolve_defaults(args)
        return args.eps, args.n_ex

    assert defaults() == ("2/255", N_TEST)
    assert defaults(norm="L2") == ("0.25", N_TEST)
    assert defaults(eps="1/255", n_ex=3) == ("1/255", 3)  # given values are kept
    with pytest.raises(InputError, match="no default eps for L2"):
        resolve_defaults(argparse.Namespace(dataset="imagenet", norm="L2", eps=None, n_ex=None,
                                            data_npz=None))


def test_added_row_end_to_end_eval(toy):
    """``advtrain eval --dataset toy4`` (the parser's choices come from the table): the row's
    eps and test-set size reach the card."""
    from advtrain.cli import main
    from advtrain.models import create_model

    tmp, *_ = toy
    torch.manual_seed(0)
    model = create_model("wrn-10-1", dataset="toy4")
    torch.save({"model": model.state_dict(), "arch": "wrn-10-1", "dataset": "toy4",
                "num_classes": 4}, tmp / "toy.pt")
    out = tmp / "cards"
    assert main(["eval", str(tmp / "toy.pt"), "--dataset", "toy4", "--data-npz", str(tmp / "test.npz"),
                 "--version", "custom", "--attacks", "apgd-ce", "--n-iter", "1", "--no-sanity",
                 "--quiet", "--device", "cpu", "--out", str(out), "--name", "Toy"]) == 0
    side = json.loads((out / "toy4" / "Linf" / "Toy.advtrain.json").read_text())
    assert side["eps_str"] == "2/255" and side["n_ex"] == N_TEST and side["test_images"] == N_TEST
    assert side["data"]["classes"] == 4
