"""``eval --threat-model corruptions``: a tiny CIFAR-10-C folder in the published layout -> a
RobustBench corruptions card (ModelInfo) whose accuracies match an independent computation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advtrain.cli import main
from advtrain.eval.corruptions import corruption_names, load_block, published_n

PUBLISHED_N = 10000  # RobustBench's CIFAR-10-C files: 10,000 images per severity


def test_published_block_size_is_the_facts_test_set():
    assert published_n("cifar10") == published_n("cifar100") == PUBLISHED_N


N = 4  # images per severity


def _model():
    from advtrain.models import create_model

    torch.manual_seed(0)
    return create_model("wrn-10-1", dataset="cifar10").eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """DIR/CIFAR-10-C/<c>.npy (5N images), labels.npy (5N), DIR/test.npz (clean), a checkpoint;
    labels are the model's own predictions on half the images so accuracies are not all 0."""
    root = tmp_path_factory.mktemp("c10c")
    model = _model()
    rng = np.random.default_rng(0)
    folder = root / "CIFAR-10-C"
    folder.mkdir()
    images = {c: rng.integers(0, 256, (5 * N, 32, 32, 3), dtype=np.uint8)
              for c in corruption_names()}
    with torch.no_grad():
        first = torch.from_numpy(images["fog"][:N]).permute(0, 3, 1, 2).float() / 255
        labels = model(first).argmax(1).numpy()
    labels = np.tile(np.where(np.arange(N) % 2 == 0, labels, (labels + 1) % 10), 5).astype(np.uint8)
    for c, arr in images.items():
        np.save(folder / f"{c}.npy", arr)
    np.save(folder / "labels.npy", labels)
    clean = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.savez(root / "test.npz", image=clean, label=np.arange(6) % 10)
    torch.save({"model": model.state_dict(), "arch": "wrn-10-1", "dataset": "cifar10",
                "num_classes": 10}, root / "tiny.pt")
    return root, model, images, labels, clean


def _acc64(model, images_uint8, labels) -> float:
    x = torch.from_numpy(images_uint8.astype(np.float64) / 255.0).permute(0, 3, 1, 2)
    m = _model().double()
    m.load_state_dict({k: v.double() if v.is_floating_point() else v
                       for k, v in model.state_dict().items()})
    with torch.no_grad():
        return float((m(x).argmax(1).numpy() == labels.astype(np.int64)).mean())


def test_card_loads_as_modelinfo_and_matches_independent_accuracies(world, tmp_path):
    from robustbench.utils import ModelInfo

    root, model, images, labels, clean = world
    out = tmp_path / "cards"
    rc = main(["eval", str(root / "tiny.pt"), "--dataset", "cifar10", "--threat-model",
               "corruptions", "--data-root", str(root), "--device", "cpu", "--out", str(out),
               "--name", "Tiny_WRN-10-1", "--batch-size", "7"])
    assert rc == 0
    card_path = out / "cifar10" / "corruptions" / "Tiny_WRN-10-1.json"
    card = json.loads(card_path.read_text())
    info = ModelInfo(**card)
    assert None not in card.values() and "autoattack_acc" not in card and "reported" not in card
    assert "partial evaluation: 4 of 10000" in info.footnote
    side = json.loads(card_path.with_name("Tiny_WRN-10-1.advtrain.json").read_text())
    table = {c: {str(s): _acc64(model, images[c][(s - 1) * N:s * N], labels[:N])
                 for s in range(1, 6)} for c in corruption_names()}
    for c in corruption_names():
        for s in range(1, 6):
            assert side["per_corruption_severity"][c][str(s)] == pytest.approx(table[c][str(s)])
    mean = np.mean([v for row in table.values() for v in row.values()])
    assert float(card["corruptions_acc"]) == pytest.approx(100 * mean, abs=0.006)
    for s in range(1, 6):
        assert side["per_severity"][str(s)] == pytest.approx(
            np.mean([table[c][str(s)] for c in table]))
    assert float(card["clean_acc"]) == pytest.approx(100 * _acc64(model, clean, np.arange(6) % 10),
                                                     abs=0.006)
    assert side["n_per_block"] == N and side["n_clean"] == 6


def test_published_layout_goes_through_robustbench_loader(tmp_path):
    """A sparse full-size file (5 x 10,000 images): RobustBench's own loader and the reduced-layout
    reader slice the same images for every severity."""
    from numpy.lib.format import open_memmap

    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    rng = np.random.default_rng(1)
    arr = open_memmap(folder / "fog.npy", mode="w+", dtype=np.uint8,
                      shape=(5 * PUBLISHED_N, 32, 32, 3))
    for s in range(5):
        arr[s * PUBLISHED_N:s * PUBLISHED_N + 3] = rng.integers(0, 256, (3, 32, 32, 3))
    arr.flush()
    del arr
    np.save(folder / "labels.npy", np.tile(np.arange(PUBLISHED_N) % 10, 5).astype(np.uint8))
    raw = np.load(folder / "fog.npy", mmap_mode="r")
    for s in range(1, 6):
        x, y = load_block(folder, "cifar10", "fog", s, 3, PUBLISHED_N)  # RobustBench's loader
        expected = torch.from_numpy(np.array(raw[(s - 1) * PUBLISHED_N:][:3])).permute(0, 3, 1, 2)
        assert x.dtype == torch.float32 and float(x.max()) <= 1.0
        assert torch.equal((x.double() * 255).round().to(torch.uint8), expected)
        assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2]


@pytest.mark.parametrize("breakage,needle", [
    ("missing", "lacks snow.npy"), ("shape", "expected uint8"), ("labels", "labels.npy 3"),
    ("noroot", "pass --data-root"), ("sweep", "are for Linf/L2/L1 attacks")])
def test_bad_folders_one_line(world, tmp_path, capsys, breakage, needle):
    import shutil

    root, *_ = world
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    folder = bad / "CIFAR-10-C"
    if breakage == "missing":
        (folder / "snow.npy").unlink()
    elif breakage == "shape":
        np.save(folder / "snow.npy", np.zeros((5 * N, 32, 32), np.uint8))
    elif breakage == "labels":
        np.save(folder / "labels.npy", np.zeros(3, np.uint8))
    data = [] if breakage == "noroot" else ["--data-root", str(bad)]
    data += ["--eps-sweep", "0,8/255"] if breakage == "sweep" else []
    rc = main(["eval", str(bad / "tiny.pt"), "--dataset", "cifar10", "--threat-model",
               "corruptions", *data, "--device", "cpu", "--out", str(tmp_path / "cards")])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cards").exists()
