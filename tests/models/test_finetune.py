"""Fine-tuning (``model.weights`` + ``model.new_head``): the backbone of a 1,000-class file goes into
a 10-class timm model, the head stays freshly initialised, the left-out keys are named in one line;
every other key is still checked, and a file is read tensors-only through the one loader."""
from __future__ import annotations

import pytest
import torch

from advtrain import config as C
from advtrain.errors import CheckpointError, InputError
from advtrain.models import create_model
from advtrain.models.timm_models import head_keys
from folder_helpers import TINY_TIMM, folder_config

ARCH = "timm:resnet10t"


def _file(tmp_path, arch=ARCH, n=1000, seed=1):
    torch.manual_seed(seed)
    src = create_model(arch, num_classes=n, image_size=32)
    path = tmp_path / f"{n}.pt"
    torch.save(src.model.state_dict(), path)  # a plain timm state_dict (tensors only)
    return src, str(path)


def test_new_head_loads_the_backbone_and_keeps_a_fresh_head(tmp_path, capsys):
    src, path = _file(tmp_path)
    torch.manual_seed(7)
    fresh = create_model(ARCH, num_classes=10, image_size=32)
    torch.manual_seed(7)
    tuned = create_model(ARCH, num_classes=10, image_size=32, weights=path, new_head=True)
    head = head_keys(tuned.model)
    assert head == ("fc.weight", "fc.bias")
    s, t, f = src.model.state_dict(), tuned.model.state_dict(), fresh.model.state_dict()
    for k in t:
        if k in head:
            assert t[k].shape[0] == 10 and torch.equal(t[k], f[k]), k  # the fresh initialisation
        else:
            assert torch.equal(t[k], s[k]), k  # the file's backbone
    note = tuned.weights_note
    assert "\n" not in note and "fc.weight (1000, 512)->(10, 512)" in note and "fc.bias (1000,)->(10,)" in note


def test_without_new_head_a_class_count_mismatch_says_how_to_fine_tune(tmp_path):
    _, path = _file(tmp_path)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*fc\.weight.*model\.new_head: true"):
        create_model(ARCH, num_classes=10, image_size=32, weights=path)


def test_new_head_still_checks_every_backbone_key(tmp_path):
    _, path = _file(tmp_path, arch="timm:resnet14t")
    with pytest.raises(CheckpointError, match="unexpected keys|missing keys|shape"):
        create_model(ARCH, num_classes=10, image_size=32, weights=path, new_head=True)


def test_new_head_needs_weights_and_a_timm_arch():
    with pytest.raises(InputError, match="model.new_head replaces the classifier"):
        C.from_dict({"data": {"dataset": "imagenet"}, "model": {"arch": ARCH, "new_head": True},
                     "objective": {"name": "pgd_at"}})
    with pytest.raises(InputError, match="timm:<name> architectures only"):
        C.from_dict({"model": {"arch": "wrn-10-1", "new_head": True}})


def test_fine_tuning_trains_from_the_backbone(tmp_path, capsys):
    from advtrain.train.loop import fit

    torch.manual_seed(0)
    src = create_model(TINY_TIMM, num_classes=1000, image_size=32)
    path = tmp_path / "src.pt"
    torch.save({"model": src.state_dict()}, path)  # an advtrain checkpoint layout ("model." keys)
    cfg = folder_config(tmp_path, "pgd_at", model={"weights": str(path), "new_head": True},
                        optim={"epochs": 1}, data={"test_subset": 0})
    fit(cfg)
    err = capsys.readouterr().err
    assert "backbone loaded; new head, left out: classifier.weight" in err


def test_drop_path_is_timms_drop_path_rate():
    """model.drop_path reaches timm's create_model(drop_path_rate=...): DropPath layers whose rates
    rise linearly to the given one (timm's rule), and a model without it is refused in one line."""
    from timm.layers import DropPath

    cfg = C.from_dict({"data": {"dataset": "imagefolder", "num_classes": 10, "image_size": 32},
                       "model": {"arch": "timm:convnext_atto", "drop_path": 0.1},
                       "objective": {"name": "pgd_at"}})
    from advtrain.models.timm_models import model_options

    model = create_model("timm:convnext_atto", dataset="imagefolder", num_classes=10, **model_options(cfg))
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.1) and min(rates) < 0.1
    plain = create_model("timm:convnext_atto", num_classes=10, image_size=32)
    assert not any(isinstance(m, DropPath) for m in plain.modules())
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        C.from_dict({"model": {"arch": "timm:convnext_atto", "drop_path": 1.5}})
