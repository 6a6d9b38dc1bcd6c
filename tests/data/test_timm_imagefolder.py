"""timm models (``timm:<name>``) on ImageFolder datasets: the registry, the loader, training with
the CIFAR config keys, bit-identical resume, an ImageNet-style card and a RobustBench imagenet export
that ``robustbench.utils.load_model`` loads with identical logits (issue 18)."""
from __future__ import annotations

import json
import math
import glob
import os

import pytest
import torch

from advtrain.train import checkpoint as ck
from advtrain import config as C
from advtrain.errors import AdvtrainError, InputError
from advtrain.models import create_model
from folder_helpers import TINY_TIMM, folder_config, make_image_folder
from trainer_helpers import one_thread, states_equal

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _threads():
    with one_thread():
        yield


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("name,size", [("timm:test_vit", 32), ("timm:test_efficientnet", 40),
                                       ("timm:test_byobnet", 32)])
def test_timm_model_normalises_inside_and_keeps_model_keys(name, size):
    import timm

    model = create_model(name, dataset="imagefolder", num_classes=7, image_size=size).eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    cfg = timm.create_model(name[5:], pretrained=False).pretrained_cfg
    mean = torch.tensor(cfg["mean"], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float64).view(1, 3, 1, 1)
    expected = model.model(((x.double() - mean) / std).float())
    assert model(x).shape == (2, 7)
    assert torch.allclose(model(x), expected, atol=1e-5, rtol=1e-5)
    keys = list(model.state_dict())
    assert keys and all(k.startswith("model.") for k in keys)  # mean/std are not saved
    assert (model.arch_name, model.num_classes, model.image_size) == (name, 7, size)


def test_timm_vit_takes_the_image_size():
    model = create_model("timm:test_vit", num_classes=3, image_size=48)
    assert model(torch.rand(1, 3, 48, 48)).shape == (1, 3)


def test_timm_names_and_options_are_checked():
    with pytest.raises(InputError, match="unknown timm architecture"):
        create_model("timm:no_such_net_xyz", num_classes=3)
    with pytest.raises(InputError, match="needs num_classes"):
        create_model(TINY_TIMM, dataset="imagefolder")
    with pytest.raises(InputError, match="does not take"):
        create_model(TINY_TIMM, num_classes=3, depth=3)
    assert create_model(TINY_TIMM, dataset="imagenet").num_classes == 1000


def test_timm_weights_file_is_loaded_tensors_only(tmp_path):
    a = create_model(TINY_TIMM, num_classes=4, image_size=32)
    path = tmp_path / "w.pt"
    torch.save(a.model.state_dict(), path)  # a plain timm state_dict
    b = create_model(TINY_TIMM, num_classes=4, image_size=32, weights=str(path))
    assert states_equal(a.state_dict(), b.state_dict())
    bad = tmp_path / "evil.pt"
    torch.save({"x": ValueError("code, not tensors")}, bad)
    with pytest.raises(AdvtrainError):
        create_model(TINY_TIMM, num_classes=4, weights=str(bad))


# ----------------------------------------------------------------------------- data
def test_eval_transform_is_robustbench_res256crop224(tmp_path):
    from PIL import Image
    from robustbench.data import PREPROCESSINGS

    from advtrain.data.imagefolder import FolderDataset

    img = (torch.rand(300, 260, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(img.numpy()).save(path)
    ours, label = FolderDataset([(str(path), 3)], 224, train=False)[0]
    with Image.open(path) as im:
        theirs = PREPROCESSINGS["Res256Crop224"](im.convert("RGB"))
    assert label == 3 and torch.equal(ours, theirs)


def test_loader_is_reproducible_and_sharded(tmp_path):
    from advtrain.data import build_train_loader, set_loader_epoch

    root = make_image_folder(tmp_path / "d", n_classes=4, per_class=(5, 1))

    def batches(rank=0, world=1, workers=0, epoch=1):
        loader = build_train_loader("imagefolder", root=root, num_classes=4, image_size=24, batch_size=4,
                                    seed=3, rank=rank, world_size=world, workers=workers)
        set_loader_epoch(loader, epoch)
        return [(x.clone(), y.clone()) for x, y in loader]

    one = batches()
    assert all(x.shape[1:] == (3, 24, 24) and 0 <= x.min() and x.max() <= 1 for x, _ in one)
    again = batches(workers=2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, again))
    other = batches(epoch=2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(one, other))
    loader = build_train_loader("imagefolder", root=root, num_classes=4, image_size=24, batch_size=4, seed=3)
    set_loader_epoch(loader, 1)
    late = [(x, y) for x, y in loader.iter_from(2)]  # a mid-epoch resume: batches 2.. of the epoch
    assert len(late) == len(one) - 2
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one[2:], late))
    r0, r1 = batches(0, 2), batches(1, 2)
    labels = sorted(torch.cat([y for _, y in r0 + r1]).tolist())
    assert len(labels) == 20 and labels == sorted([k for k in range(4) for _ in range(5)])


def test_rrc_params_stay_inside_the_image():
    from advtrain.data.imagefolder import RRC_SCALE, rrc_params

    gen = torch.Generator().manual_seed(0)
    for h, w in ((64, 64), (30, 200), (200, 31)):
        for _ in range(50):
            top, left, ch, cw = rrc_params(h, w, gen)
            assert 0 <= top and 0 <= left and top + ch <= h and left + cw <= w
            assert ch * cw >= 0.5 * RRC_SCALE[0] * h * w  # rounding aside, >= 8 % of the area


@pytest.mark.parametrize("data,match", [
    ({"dataset": "imagefolder", "root": "x"}, "needs data.num_classes"),
    ({"dataset": "imagenet", "root": "x", "num_classes": 10}, "has 1000 classes"),
    ({"dataset": "cifar10", "image_size": 64}, "imagefolder/imagenet datasets only"),
    ({"dataset": "imagefolder", "root": "x", "num_classes": 3, "augment": "autoaugment"}, "not supported"),
])
def test_folder_config_mistakes_are_one_line_errors(data, match):
    with pytest.raises(InputError, match=match):
        C.from_dict({"data": data, "model": {"arch": TINY_TIMM}})


def test_lbgat_natural_arch_may_be_a_timm_model_and_is_checked_at_load():
    folder = {"dataset": "imagefolder", "root": "x", "num_classes": 10}
    cfg = C.from_dict({"data": folder, "model": {"arch": TINY_TIMM},
                       "objective": {"name": "lbgat", "natural_arch": TINY_TIMM}})
    assert cfg.objective.natural_arch == TINY_TIMM
    with pytest.raises(InputError, match="unknown timm architecture 'timm:no_such_net'"):
        C.from_dict({"data": folder, "model": {"arch": TINY_TIMM},
                     "objective": {"name": "lbgat", "natural_arch": "timm:no_such_net"}})


def test_folder_config_defaults_image_size_and_timm_weights_rule():
    from advtrain.data import num_classes
    from advtrain.data.imagefolder import image_size_of

    cfg = C.from_dict({"data": {"dataset": "imagenet", "root": "x"}, "model": {"arch": "timm:ResNet10T"}})
    assert (num_classes("imagenet", cfg.data.num_classes), image_size_of(cfg.data)) == (1000, 224)
    assert create_model(cfg.model.arch, num_classes=2).arch_name == "timm:resnet10t"
    with pytest.raises(InputError, match="timm:<name> architectures only"):
        C.from_dict({"model": {"arch": "wrn-10-1", "weights": "w.pt"}})


def test_imagenet_protocol_list_is_robustbenchs():
    from advtrain.data.imagefolder import IMAGENET_PROTOCOL_N, imagenet_protocol_files

    files = imagenet_protocol_files()
    assert len(files) == IMAGENET_PROTOCOL_N == 5000
    assert files[0] == "n09468604/ILSVRC2012_val_00015253.JPEG"


# ----------------------------------------------------------------------------- training
def _final(run_dir):
    return ck.load(os.path.join(run_dir, "last.pt"))


def _same(a, b):
    assert states_equal(a["model"], b["model"])
    assert states_equal(a["objective"], b["objective"])
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert set(oa) == set(ob) and all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa)


def test_gkl_at_on_timm_imagefolder_resumes_bit_identically(tmp_path):
    from advtrain.train.loop import fit

    extra = dict(objective={"alpha": 1.0, "beta": 1.0}, ema={"enabled": True, "decay": 0.5})
    ref = fit(folder_config(tmp_path / "a", "gkl_at", **extra))
    part = fit(folder_config(tmp_path / "b", "gkl_at", **extra), stop_after=1)
    assert _final(part)["epoch"] == 1
    resumed = fit(None, run_dir=part, resume=True)
    a, b = _final(ref), _final(resumed)
    _same(a, b)
    assert states_equal(a["ema"], b["ema"])
    assert a["arch"] == TINY_TIMM and a["num_classes"] == 10


def test_trades_trains_evaluates_and_is_refused_as_an_imagenet_export(tmp_path, capsys):
    """(The ImageNet export's round trip through robustbench.utils.load_model: tests/hub.)"""
    from advtrain.cli import main
    from advtrain.train.loop import fit

    run = fit(folder_config(tmp_path / "t", "trades", optim={"epochs": 1}))
    ckpt = os.path.join(run, "last.pt")
    first = _final(run)["model"]
    assert not states_equal(first, create_model(TINY_TIMM, num_classes=10, image_size=32).state_dict())
    out = tmp_path / "model_info"
    rc = main(["eval", ckpt, "--dataset", "imagefolder", "--version", "custom", "--attacks", "apgd-ce",
               "--n-iter", "2", "--no-sanity", "--quiet", "--out", str(out), "--name", "Tiny_T"])
    assert rc == 0
    card = json.loads((out / "imagefolder" / "Linf" / "Tiny_T.json").read_text())
    side = json.loads((out / "imagefolder" / "Linf" / "Tiny_T.advtrain.json").read_text())
    assert card["eps"] == "4/255" and side["n_ex"] == 20  # default: every val image, 4/255
    assert side["test_images"] == 20 and side["data"]["classes_seen"] == 10
    from robustbench.utils import ModelInfo

    assert card.pop("unreliable") is False  # RobustBench's own cards carry it; ModelInfo does not
    ModelInfo(**card)
    model_dir = tmp_path / "md"
    capsys.readouterr()
    # a 10-class ImageFolder model is not an ImageNet model: RobustBench would score it on 1,000
    assert main(["export", ckpt, "--dataset", "imagenet", "--name", "Tiny2026_T",
                 "--model-dir", str(model_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "gives 10 class scores but imagenet is scored on 1000 classes" in err and "\n" not in err
    assert not model_dir.exists() or not any(model_dir.rglob("*.pt"))
    assert main(["export", ckpt, "--format", "hub", "--dataset", "imagenet", "--name", "Tiny2026_T",
                 "--out", str(tmp_path / "hub")]) == 2  # a Hub export names its protocol too
    assert not (tmp_path / "hub").exists() or not any((tmp_path / "hub").iterdir())


@pytest.mark.parametrize("name", ["pgd_at", "ikl_at", "mart", "lbgat", "ard", "rslad", "gkl_kd"])
def test_other_objectives_step_on_a_timm_model(name):
    from advtrain.config import build_objective

    model = create_model(TINY_TIMM, num_classes=5, image_size=32)
    extra = {}
    if name == "lbgat":
        extra["natural_arch"] = TINY_TIMM
    if name in ("ard", "rslad", "gkl_kd"):
        extra["teacher"] = create_model("timm:test_vit", num_classes=5, image_size=32).eval()
    obj = build_objective(name, dataset="imagefolder", num_classes=5, eps=4 / 255, step_size=2 / 255,
                          steps=1, **extra)
    x, y = torch.rand(4, 3, 32, 32), torch.arange(4) % 5
    x_adv = obj.perturb(model, x, y)
    assert (x_adv - x).abs().max() <= 4 / 255 + 1e-6
    loss, _ = obj.loss(model, x, x_adv, y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and any(g.abs().sum() > 0 for g in grads)


#: a tiny model of each recipe's family (ResNet, ConvNeXt, ViT)
TINY_OF = {"timm:resnet50": "timm:resnet10t", "timm:convnext_tiny": "timm:convnext_atto",
           "timm:vit_small_patch16_224": "timm:test_vit"}


@pytest.mark.parametrize("name", sorted(os.path.basename(p) for p in
                                        glob.glob(os.path.join(REPO, "configs", "imagenet", "*.yaml"))))
def test_imagenet_recipe_trains_one_step_of_a_tiny_variant(tmp_path, name):
    """Each recipe, with a tiny model of its family on a generated 10-class ImageFolder (fp32 on the
    CPU), builds every part (optimizer groups, mixup, RandAugment, erasing, schedule) and trains one
    step at the lr of the schedule's first update."""
    from advtrain.config.schedules import lr_at_update
    from advtrain.train.loop import Trainer

    path = os.path.join(REPO, "configs", "imagenet", name)
    full = C.load(path)
    assert full.data.dataset == "imagenet" and full.model.arch in TINY_OF
    root = make_image_folder(tmp_path / "d")
    cfg = C.load(path, [f"data.root={root}", "data.dataset=imagefolder", "data.num_classes=10",
                        "data.image_size=32", "data.batch_size=10", "data.workers=0", "data.test_subset=0",
                        f"model.arch={TINY_OF[full.model.arch]}", "precision=fp32", "run.device=cpu",
                        "run.progress=false", f"run.out_dir={tmp_path / 'runs'}"])
    trainer = Trainer(cfg, str(tmp_path / "run"), None)
    trainer._set_epoch_hparams(1)
    trainer._set_update_lr(1, 0)
    p = trainer.parts
    # the recipe's model options reach the built model (revisiting-at: ConvStem, no normaliser)
    assert any(type(m).__name__ == "ConvStem" for m in p.model.modules()) == full.model.conv_stem
    norm = [m for m in p.model.modules() if type(m).__name__ == "TimmClassifier"][0]
    assert (float(norm.std.min()) == 1.0 and float(norm.mean.abs().max()) == 0.0) == (not full.model.normalize)
    assert p.optimizer.param_groups[0]["lr"] == pytest.approx(lr_at_update(0, 3, cfg.optim))
    assert p.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.warmup_lr)
    assert len(p.optimizer.param_groups) == 2  # with and without weight decay
    p.loader.set_epoch(1)
    x, y = next(iter(p.loader))
    assert y.shape == (10, 10) and torch.allclose(y.sum(1), torch.ones(10))  # CutMix/Mixup soft targets
    before = [q.detach().clone() for q in p.model.parameters()]
    terms = trainer._train_step(x, y, 1)
    assert terms is not None and all(math.isfinite(v) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, p.model.parameters()))


def test_missing_folder_root_is_named_when_the_data_is_built(tmp_path):
    from advtrain.data import build_train_loader

    with pytest.raises(InputError, match="needs data.root"):
        build_train_loader("imagefolder", num_classes=3, image_size=32)
    with pytest.raises(AdvtrainError, match="train/ with one sub-folder"):
        build_train_loader("imagefolder", root=str(tmp_path), num_classes=3, image_size=32)


def test_attention_matmuls_are_counted_in_flops():
    from timm.models.vision_transformer import Attention

    from advtrain.models import count_flops

    class Tokens(torch.nn.Module):  # (B, 3, H, W) -> B x N tokens of width C -> attention
        def __init__(self, c):
            super().__init__()
            self.attn = Attention(c, num_heads=2)

        def forward(self, x):
            return self.attn(x.flatten(2).transpose(1, 2).repeat(1, 1, 4))

    b, n, c = 2, 25, 12
    flops = count_flops(Tokens(c), (b, 3, 5, 5))
    linear = 2 * b * n * c * 3 * c + 2 * b * n * c * c  # qkv and proj
    assert flops == linear + 2 * 2 * b * n * n * c


def test_imagenet_export_names_robustbench_would_not_load_are_refused(tmp_path):
    from advtrain.hub import export as export

    model = create_model(TINY_TIMM, num_classes=3, image_size=32)
    with pytest.raises(InputError, match="without 'Standard'"):
        export.to_robustbench(model, "My_Standard_R50", "imagenet", model_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_eval_imagenet_uses_robustbenchs_list_and_labels(tmp_path):
    from robustbench.data import PREPROCESSINGS

    from advtrain.cli import main
    from advtrain.data.imagefolder import imagenet_protocol_files

    files = imagenet_protocol_files()[:3]
    root = tmp_path / "imagenet"
    make_image_folder(tmp_path / "src", n_classes=1, per_class=(0, 3), size=80)
    src = sorted((tmp_path / "src" / "val" / "c00").iterdir())
    for f, s in zip(files, src):
        (root / "val" / f).parent.mkdir(parents=True, exist_ok=True)
        (root / "val" / f).write_bytes(s.read_bytes())
    import importlib.resources as res

    wnid_map = json.loads(res.files("robustbench").joinpath("helper_files/imagenet_class_to_id_map.json").read_text())
    model = create_model(TINY_TIMM, dataset="imagenet", image_size=224).eval()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    from advtrain.data.imagefolder import load_folder_test

    x, y = load_folder_test(str(root), image_size=224, files=files)
    assert y.tolist() == [wnid_map[f.split("/")[0]] for f in files]
    from PIL import Image

    with Image.open(root / "val" / files[0]) as im:
        assert torch.equal(x[0], PREPROCESSINGS["Res256Crop224"](im.convert("RGB")))
    out = tmp_path / "mi"
    assert main(["eval", str(tmp_path / "m.pt"), "--arch", TINY_TIMM, "--dataset", "imagenet",
                 "--data-root", str(root), "--n-ex", "3", "--version", "custom", "--attacks", "apgd-ce",
                 "--n-iter", "1", "--no-sanity", "--quiet", "--out", str(out), "--name", "In_T"]) == 0
    side = json.loads((out / "imagenet" / "Linf" / "In_T.advtrain.json").read_text())
    assert side["eps_str"] == "4/255" and side["n_ex"] == 3
    # drawn from RobustBench's 5,000-image protocol, not from the 4 images in the folder
    assert side["test_images"] == 5000 and side["full_standard"] is False
    assert side["data"]["source"] == "imagenet protocol list"
    with pytest.raises(AdvtrainError, match="lacks 1 of the 4 protocol images"):
        load_folder_test(str(root), image_size=224, files=imagenet_protocol_files()[:4])


def test_eval_imagefolder_random_subset_is_fixed_and_sized(tmp_path):
    import argparse

    from advtrain.cli.eval_model import resolve_defaults
    from advtrain.cli.folder_eval import load_folder_eval

    root = make_image_folder(tmp_path / "d", n_classes=4, per_class=(0, 5))
    model = create_model(TINY_TIMM, num_classes=4, image_size=24)
    args = argparse.Namespace(dataset="imagefolder", data_root=root, data_npz=None, n_ex=6, eps=None,
                              subset="random", subset_seed=0, norm="Linf")
    resolve_defaults(args)
    assert args.eps == "4/255"
    x, y = load_folder_eval(args, model)
    x2, y2 = load_folder_eval(args, model)
    assert x.shape == (6, 3, 24, 24) and torch.equal(x, x2) and torch.equal(y, y2)
    first = load_folder_eval(argparse.Namespace(**{**vars(args), "subset": "first"}), model)[1]
    assert first.tolist() == [0, 0, 0, 0, 0, 1]  # sorted order: class 0's five images first
    assert len(set(y.tolist())) > 1
    args.n_ex = 21
    with pytest.raises(InputError, match="has 20 images"):
        load_folder_eval(args, model)


@pytest.mark.parametrize("arch", ["timm:convnext_atto", "timm:vit_tiny_patch16_224"])
def test_convnext_and_vit_checkpoints_evaluate(tmp_path, arch):
    """Their constructors cannot run on the meta device (timm reads drop-path rates with .item()):
    the checkpoint reader and the model loader check them on a CPU build, and eval writes a card."""
    from advtrain.cli import main
    from advtrain.train.loop import fit

    run = fit(folder_config(tmp_path / "t", "pgd_at", model={"arch": arch}, optim={"epochs": 1},
                            eval={"test_pgd_steps": 0}))
    out = tmp_path / "cards"
    rc = main(["eval", os.path.join(run, "last.pt"), "--dataset", "imagefolder", "--version", "custom",
               "--attacks", "apgd-ce", "--n-iter", "1", "--n-ex", "4", "--no-sanity", "--quiet",
               "--out", str(out), "--name", "Tiny_C"])
    assert rc == 0
    card = json.loads((out / "imagefolder" / "Linf" / "Tiny_C.json").read_text())
    assert card["eps"] == "4/255" and "clean_acc" in card and "autoattack_acc" in card
