"""ImageFolder augmentation (advtrain.data.folder_augment) against its sources: torchvision's
RandAugment op set and draws, torchvision's ColorJitter, timm's RandomErasing and timm's Mixup/CutMix
(images and smoothed label mixing), and the determinism of the loader that applies them."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from advtrain.data.folder_augment import color_jitter, mix_batch, ra_ops, rand_augment, random_erase


def _pil(seed=0, size=40):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size + 6, 3)).astype(np.uint8))


def test_randaugment_op_set_is_torchvisions():
    """The 14 ops of torchvision's RandAugment (no Invert, no Cutout), written out."""
    want = ["Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
            "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize"]
    ops = ra_ops((224, 224))
    assert list(ops) == want
    # magnitude 9 of 31 bins: 9/30 of each op's maximum (Rotate 30 deg, Shear 0.3)
    assert float(ops["Rotate"][0][9]) == pytest.approx(9.0) and float(ops["ShearX"][0][9]) == pytest.approx(0.09)


@pytest.mark.parametrize("seed", range(6))
def test_randaugment_draws_are_torchvisions(seed):
    from torchvision.transforms import RandAugment

    img = _pil(seed)
    torch.manual_seed(seed)
    ref = np.asarray(RandAugment(num_ops=2, magnitude=9)(img))
    ours = np.asarray(rand_augment(img, 2, 9, torch.Generator().manual_seed(seed)))
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("seed", range(3))
def test_color_jitter_is_torchvisions(seed):
    from torchvision.transforms import ColorJitter

    img = _pil(seed)
    torch.manual_seed(seed)
    ref = np.asarray(ColorJitter(0.4, 0.4, 0.4)(img))
    assert np.array_equal(np.asarray(color_jitter(img, 0.4, torch.Generator().manual_seed(seed))), ref)


@pytest.mark.parametrize("seed", range(4))
def test_random_erasing_is_timms_pixel_mode(seed):
    from timm.data.random_erasing import RandomErasing

    x = torch.rand(3, 32, 40)
    random.seed(seed)
    torch.manual_seed(100 + seed)
    ref = RandomErasing(probability=0.7, mode="pixel", device="cpu")(x.clone())
    ours = random_erase(x.clone(), 0.7, random.Random(seed), torch.Generator().manual_seed(100 + seed))
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("switch_prob", [0.5, 1.0])
@pytest.mark.parametrize("seed", range(5))
def test_mixup_cutmix_images_and_labels_are_timms(seed, switch_prob):
    """timm Mixup(mixup 0.8, cutmix 1.0, mode batch) with label smoothing 0.1: the same images, and
    our soft targets smoothed as the loss smooths them (t (1 - s) + s / K) are timm's targets."""
    from timm.data import Mixup

    K, s = 7, 0.1
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(6, 3, 16, 20, generator=g), torch.randint(0, K, (6,), generator=g)
    np.random.seed(seed)
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=switch_prob, label_smoothing=s, num_classes=K)
    ref_x, ref_t = mix(x.clone(), y.clone())
    ours_x, ours_t, lam = mix_batch(x.clone(), y, K, np.random.RandomState(seed), mixup=0.8, cutmix=1.0,
                                    switch_prob=switch_prob)
    assert torch.equal(ours_x, ref_x)
    torch.testing.assert_close(ours_t * (1 - s) + s / K, ref_t, rtol=0, atol=1e-7)
    # the label weights are the pasted area (CutMix) / the blend weight (Mixup), written out
    one = torch.nn.functional.one_hot(y, K).double()
    torch.testing.assert_close(ours_t.double(), lam * one + (1 - lam) * one.flip(0), rtol=0, atol=1e-7)


def test_soft_target_ce_with_smoothing_is_timms_soft_target_loss():
    """The objective's CE on a mixed target with label smoothing s == timm's SoftTargetCrossEntropy
    on timm's smoothed mixed target (the loss ARES and revisiting-at train with)."""
    from timm.data.mixup import mixup_target
    from timm.loss import SoftTargetCrossEntropy

    from advtrain import config as C
    from advtrain.train.setup import make_objective

    K, s, lam = 5, 0.1, 0.37
    cfg = C.from_dict({"objective": {"name": "pgd_at", "label_smoothing": s}})
    obj = make_objective(cfg, K)
    logits = torch.randn(4, K, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 4])
    one = torch.nn.functional.one_hot(y, K).double()
    soft = lam * one + (1 - lam) * one.flip(0)
    ref = SoftTargetCrossEntropy()(logits, mixup_target(y, K, lam=lam, smoothing=s).double())
    torch.testing.assert_close(obj.ce(logits, soft), ref, rtol=1e-6, atol=0)  # timm builds it in float32


def test_folder_loader_with_every_augmentation_is_reproducible(tmp_path):
    from advtrain.data.imagefolder import build_folder_train_loader
    from folder_helpers import make_image_folder

    root = make_image_folder(tmp_path / "d", n_classes=4, per_class=(4, 1), size=40)
    options = {"interpolation": "bicubic", "randaugment": 2, "randaugment_magnitude": 9,
               "color_jitter": 0.0, "reprob": 0.5,
               "mixing": {"mixup": 0.8, "cutmix": 1.0, "prob": 1.0, "switch_prob": 0.5}}

    def batches(seed=0, start=0):
        loader = build_folder_train_loader(root, num_classes=4, image_size=24, batch_size=4, seed=seed,
                                           augment_options=options)
        loader.set_epoch(2)
        return list(loader.iter_from(start))

    a, b = batches(), batches()
    assert len(a) == 4 and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    x, t = a[0]
    assert t.shape == (4, 4) and torch.allclose(t.sum(1), torch.ones(4))  # soft targets
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a[2:], batches(start=2)))  # mid-epoch resume
    assert not torch.equal(a[0][0], batches(seed=1)[0][0])


def test_augmentation_keys_are_checked():
    from advtrain import config as C
    from advtrain.errors import InputError

    folder = {"dataset": "imagefolder", "num_classes": 3}
    for data, obj, match in [({**folder, "mixup": 0.8}, "gkl_at", "soft targets"),
                             ({"dataset": "cifar10", "reprob": 0.25}, "pgd_at", "imagefolder/imagenet"),
                             ({**folder, "augment": "none", "randaugment": 2}, "pgd_at", "augment is none"),
                             ({**folder, "reprob": 1.5}, "pgd_at", r"\[0, 1\]"),
                             ({**folder, "randaugment_magnitude": 31}, "pgd_at", "0..30")]:
        with pytest.raises(InputError, match=match):
            C.from_dict({"data": data, "objective": {"name": obj}})


def test_pgd_takes_soft_targets_and_one_hot_targets_attack_as_labels():
    """Soft targets (mixup) go through PGD's CE as class probabilities: one-hot soft targets give the
    attack of the hard labels; a CW attack still refuses them."""
    from attacks import PGD, AttackError

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 2, 4, 1])
    soft = torch.nn.functional.one_hot(y, 5).float()
    runs = []
    for target in (y, soft):
        torch.manual_seed(1)
        runs.append(PGD(eps=8 / 255, alpha=2 / 255, steps=3, loss="ce")(model, x, target))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], x)
    with pytest.raises(AttackError, match="1-d tensor"):
        PGD(eps=8 / 255, alpha=2 / 255, steps=1, loss="cw")(model, x, soft)


# ----------------------------------------------------------------------------- timm's RandAugment
#: timm auto_augment.py _RAND_INCREASING_TRANSFORMS (v0.9.7 / 1.0.9 lines 641-658): the op set of 'inc1'
TIMM_INC1 = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
             "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
             "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]


def test_timm_randaugment_is_timms_rand_m9_mstd05_inc1():
    """revisiting-at's aa 'rand-m9-mstd0.5-inc1' (parserr.py:20) as timm builds it: 15 increasing ops
    (Invert and SolarizeAdd included, no Identity/Cutout), 2 layers drawn with replacement, each op
    applied w.p. 0.5 at magnitude N(9, 0.5); hparams of create_transform: translate_const
    int(224 * 0.45) = 100, fill round(255 * mean) with revisiting-at's mean 0, bicubic."""
    from PIL import Image
    from timm.data.auto_augment import RandAugment

    from advtrain.data.folder_augment import timm_rand_augment

    ra = timm_rand_augment("rand-m9-mstd0.5-inc1", 224, "bicubic")
    assert isinstance(ra, RandAugment) and ra.num_layers == 2 and ra.choice_weights is None
    assert [op.name for op in ra.ops] == TIMM_INC1
    for op in ra.ops:
        assert (op.prob, op.magnitude, op.magnitude_std, op.magnitude_max) == (0.5, 9, 0.5, None)
        assert op.kwargs == {"fillcolor": (0, 0, 0), "resample": Image.BICUBIC}
        assert op.hparams["translate_const"] == 100
    # level -> argument at magnitude 9 (auto_augment.py:206-291): Posterize 4 - int(0.9 * 4) = 1 bit,
    # Solarize threshold 256 - int(0.9 * 256) = 26, SolarizeAdd min(128, int(0.9 * 110)) = 99, Rotate 27 deg
    by_name = {op.name: op for op in ra.ops}
    assert by_name["PosterizeIncreasing"].level_fn(9, by_name["PosterizeIncreasing"].hparams) == (1,)
    assert by_name["SolarizeIncreasing"].level_fn(9, by_name["SolarizeIncreasing"].hparams) == (26,)
    assert by_name["SolarizeAdd"].level_fn(9, by_name["SolarizeAdd"].hparams) == (99,)
    assert abs(by_name["Rotate"].level_fn(9, by_name["Rotate"].hparams)[0]) == pytest.approx(27.0)
    # without inc1: timm's other list (Posterize, Solarize... not the increasing ones), 'n3' layers
    other = timm_rand_augment("rand-m7-n3", 64, "bilinear")
    assert other.num_layers == 3 and "Posterize" in [op.name for op in other.ops]
    assert other.ops[0].hparams["translate_const"] == int(64 * 0.45) and other.ops[0].magnitude == 7


def test_folder_dataset_with_timm_randaugment_makes_reproducible_images(tmp_path):
    from advtrain.data.imagefolder import FolderDataset, scan
    from folder_helpers import make_image_folder

    root = make_image_folder(tmp_path / "d", n_classes=3, per_class=(4, 1), size=40)
    _, samples = scan(root, "train", 3)
    plain = FolderDataset(samples, 32, True, seed=3, augment={"interpolation": "bicubic"})
    ra = FolderDataset(samples, 32, True, seed=3,
                       augment={"interpolation": "bicubic", "timm_randaugment": "rand-m9-mstd0.5-inc1"})
    py_state, np_state = random.getstate(), np.random.get_state()
    images = [ra[i][0] for i in range(len(samples))]
    assert random.getstate() == py_state and np.array_equal(np.random.get_state()[1], np_state[1])
    assert all(x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
               for x in images)
    assert all(torch.equal(x, ra[i][0]) for i, x in enumerate(images))  # the same draws again
    changed = sum(not torch.equal(x, plain[i][0]) for i, x in enumerate(images))
    assert changed >= len(images) // 2  # 2 ops each applied w.p. 0.5: most images change
    ra.set_epoch(1)
    assert any(not torch.equal(x, ra[i][0]) for i, x in enumerate(images))  # other draws next epoch


def test_timm_randaugment_key_is_checked():
    from advtrain import config as C
    from advtrain.errors import InputError

    folder = {"dataset": "imagefolder", "num_classes": 3}
    cfg = C.from_dict({"data": {**folder, "timm_randaugment": "rand-m9-mstd0.5-inc1"},
                       "objective": {"name": "pgd_at"}})
    assert C.resolve(cfg)["data"]["timm_randaugment"] == "rand-m9-mstd0.5-inc1"  # recorded
    for data, match in [({**folder, "timm_randaugment": "augmix-m5"}, "starting with 'rand'"),
                        ({**folder, "timm_randaugment": "rand-m9-q4"}, "not a RandAugment string timm reads"),
                        ({**folder, "timm_randaugment": "rand-m9", "randaugment": 2}, "two RandAugments"),
                        ({**folder, "augment": "none", "timm_randaugment": "rand-m9"}, "augment is none"),
                        ({"dataset": "cifar10", "timm_randaugment": "rand-m9"}, "imagefolder/imagenet")]:
        with pytest.raises(InputError, match=match):
            C.from_dict({"data": data, "objective": {"name": "pgd_at"}})
