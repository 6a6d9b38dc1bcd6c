"""ImageNet-side augmentation of the ImageFolder pipeline, every draw from a given generator.

Per image (in :class:`advtrain.data.imagefolder.FolderDataset`, after RandomResizedCrop + flip, with
the image's ``torch.Generator`` seeded by ``derive_seed(seed, epoch, index)`` and a ``random.Random``
seeded from it), in timm's order (``transforms_imagenet_train``: RRC -> flip -> RandAugment *or*
colour jitter -> ToTensor -> [Normalize] -> RandomErasing):

- :func:`rand_augment`: torchvision's ``RandAugment`` (``data.randaugment`` ops at magnitude
  ``data.randaugment_magnitude`` of 31 bins) -- its op set and its draws (op uniformly with
  replacement, sign w.p. 1/2), repeated from the generator instead of the global RNG;
- or :func:`timm_rand_augment`: timm's own ``RandAugment`` built from its config string
  (``data.timm_randaugment``, e.g. ``rand-m9-mstd0.5-inc1``) by ``rand_augment_transform`` with the
  hparams ``transforms_imagenet_train`` passes; its draws come from Python's ``random`` and
  ``numpy.random``, seeded per image (``derive_seed(seed, epoch, index, 2)``) by
  :func:`global_rngs_seeded`, which restores both generators afterwards;
- :func:`color_jitter`: torchvision's ``ColorJitter(b, c, s)`` with b = c = s = ``data.color_jitter``
  (timm's ``color_jitter`` float), random order; like timm, off when a RandAugment is on;
- :func:`random_erase`: timm's ``RandomErasing(probability=data.reprob, mode='pixel')``, one box of
  2%-1/3 of the area, aspect 0.3-3.3, filled with N(0, 1) noise per pixel. timm erases the
  *normalised* tensor; advtrain's images are [0, 1] pixels (the model normalises inside), so the
  noise is N(0, 1) in pixel units -- what revisiting-at executes (its models see [0, 1] pixels:
  mean 0, std 1) -- and the dataset clamps the image to [0, 1] afterwards (an attack input must be
  an image; revisiting-at's APGD clamps its iterates to [0, 1] the same way).

Per batch (:func:`mix_batch`, in the loader, a ``numpy.random.RandomState`` seeded by
``derive_seed(seed, epoch, batch, rank)``): timm's ``Mixup`` in ``mode='batch'`` -- with probability
``data.mixup_prob`` either CutMix (w.p. ``data.mixup_switch_prob`` when both alphas are on) or Mixup,
``lam ~ Beta(alpha, alpha)``, the partner of image i is image B-1-i, CutMix's lam corrected to the
pasted area. The labels become soft targets ``lam * onehot(y) + (1 - lam) * onehot(y.flip(0))``
(B x K float); label smoothing is applied by the loss (``F.cross_entropy(label_smoothing=s)`` on a
soft target equals timm's ``SoftTargetCrossEntropy`` on ``mixup_target(..., smoothing=s)``: both are
linear in the target).
"""
from __future__ import annotations

import contextlib
import math
import random
from typing import Iterator, Optional, Tuple

import numpy as np
import torch

#: torchvision RandAugment's number of magnitude bins
RA_BINS = 31
#: timm RandomErasing defaults (area fraction, aspect ratio range)
RE_AREA, RE_MIN_ASPECT = (0.02, 1 / 3), 0.3


def ra_ops(image_size: Tuple[int, int]) -> dict:
    """torchvision RandAugment's op set ``{name: (magnitudes, signed)}`` at ``image_size``."""
    from torchvision.transforms import RandAugment

    return RandAugment()._augmentation_space(RA_BINS, image_size)


def rand_augment(img, num_ops: int, magnitude: int, generator: torch.Generator, interpolation=None):
    """torchvision ``RandAugment(num_ops, magnitude)`` on a PIL image, drawing from ``generator``
    (the same draws, in the same order, as its ``forward`` makes from the global RNG)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.autoaugment import _apply_op

    interpolation = InterpolationMode.NEAREST if interpolation is None else interpolation
    ops = ra_ops((img.height, img.width))
    names = list(ops)
    for _ in range(num_ops):
        name = names[int(torch.randint(len(ops), (1,), generator=generator).item())]
        magnitudes, signed = ops[name]
        value = float(magnitudes[magnitude].item()) if magnitudes.ndim > 0 else 0.0
        if signed and torch.randint(2, (1,), generator=generator):
            value *= -1.0
        img = _apply_op(img, name, value, interpolation=interpolation, fill=None)
    return img


def timm_rand_augment(config: str, image_size: int, interpolation: str):
    """timm's ``rand_augment_transform(config, hparams)`` with the hparams of timm's
    ``transforms_imagenet_train`` (timm 1.0.9 transforms_factory.py:169-174; v0.9.7 :82-103):
    ``translate_const = int(image_size * 0.45)``, ``img_mean = round(255 * mean)`` (the fill of the
    geometric ops) and the training interpolation. advtrain's pipeline yields [0, 1] pixels, i.e.
    timm's transform with mean 0, std 1 -- revisiting-at's ``create_transform(..., mean=[0, 0, 0],
    std=[1, 1, 1])`` (dataset_convnext_like.py:57-81) --, so the fill is (0, 0, 0). timm parses the
    string (``m`` magnitude, ``n`` layers, ``p`` op probability, ``mstd``, ``mmax``, ``inc``, ``t``);
    a string it refuses is a one-line :class:`InputError`. timm is installed with robustbench
    (robustbench 1.1.1 pins timm 1.0.9)."""
    from advtrain.errors import InputError

    if not isinstance(config, str) or not config.startswith("rand"):
        raise InputError(f"data.timm_randaugment = {config!r} must be a timm RandAugment string "
                         "starting with 'rand', e.g. rand-m9-mstd0.5-inc1")
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.transforms import str_to_pil_interp

    hparams = {"translate_const": int(image_size * 0.45), "img_mean": (0, 0, 0),
               "interpolation": str_to_pil_interp(interpolation)}
    try:
        return rand_augment_transform(config, hparams)
    except (AssertionError, ValueError, KeyError, IndexError) as e:
        raise InputError(f"data.timm_randaugment = {config!r} is not a RandAugment string timm reads "
                         f"({type(e).__name__}{': ' + str(e) if str(e) else ''}); e.g. "
                         "rand-m9-mstd0.5-inc1") from None


@contextlib.contextmanager
def global_rngs_seeded(seed: int) -> Iterator[None]:
    """Python's ``random`` and ``numpy.random`` seeded with ``seed`` inside, their states restored
    on exit (timm's augmentations draw from both)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def color_jitter(img, strength: float, generator: torch.Generator):
    """torchvision ``ColorJitter(strength, strength, strength)`` on a PIL image from ``generator``."""
    from torchvision.transforms import functional as TF

    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    order = torch.randperm(4, generator=generator)
    factors = [float(torch.empty(1).uniform_(lo, hi, generator=generator)) for _ in range(3)]
    apply = {0: TF.adjust_brightness, 1: TF.adjust_contrast, 2: TF.adjust_saturation}
    for i in order.tolist():
        if i in apply:
            img = apply[i](img, factors[i])
    return img


def random_erase(x: torch.Tensor, probability: float, rng: random.Random,
                 generator: torch.Generator) -> torch.Tensor:
    """timm ``RandomErasing(probability, mode='pixel')`` on a C×H×W tensor, in place: the box from
    ``rng`` (timm uses Python's ``random``), the N(0, 1) fill from ``generator``."""
    if rng.random() > probability:
        return x
    chan, h_img, w_img = x.shape
    area = h_img * w_img
    log_ratio = (math.log(RE_MIN_ASPECT), math.log(1 / RE_MIN_ASPECT))
    for _ in range(10):
        target = rng.uniform(*RE_AREA) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if w < w_img and h < h_img:
            top, left = rng.randint(0, h_img - h), rng.randint(0, w_img - w)
            x[:, top:top + h, left:left + w] = torch.empty((chan, h, w), dtype=x.dtype).normal_(
                generator=generator)
            break
    return x


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, rng: np.random.RandomState, *,
              mixup: float, cutmix: float, prob: float = 1.0, switch_prob: float = 0.5
              ) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """timm ``Mixup(mode='batch', correct_lam=True, cutmix_minmax=None)`` on ``(x, y)``: returns
    (mixed x, soft targets B×K without smoothing, lam). ``rng`` makes timm's ``np.random`` draws."""
    lam, use_cutmix = 1.0, False
    if rng.rand() < prob:
        if mixup > 0 and cutmix > 0:
            use_cutmix = rng.rand() < switch_prob
            lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
        elif mixup > 0:
            lam = float(rng.beta(mixup, mixup))
        elif cutmix > 0:
            use_cutmix, lam = True, float(rng.beta(cutmix, cutmix))
    if lam != 1.0:
        if use_cutmix:
            (yl, yh, xl, xh), lam = cutmix_box(x.shape[-2:], lam, rng)
            x = x.clone()
            x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
        else:
            x = x * lam + x.flip(0) * (1.0 - lam)
    one = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)
    return x, one * lam + one.flip(0) * (1.0 - lam), lam


def cutmix_box(hw, lam: float, rng: np.random.RandomState):
    """timm ``rand_bbox`` (margin 0) + ``correct_lam``: ((yl, yh, xl, xh), lam of the pasted area)."""
    H, W = int(hw[0]), int(hw[1])
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(H * ratio), int(W * ratio)
    cy, cx = rng.randint(0, H), rng.randint(0, W)
    yl, yh = np.clip(cy - cut_h // 2, 0, H), np.clip(cy + cut_h // 2, 0, H)
    xl, xh = np.clip(cx - cut_w // 2, 0, W), np.clip(cx + cut_w // 2, 0, W)
    lam = 1.0 - float((yh - yl) * (xh - xl)) / float(H * W)
    return (int(yl), int(yh), int(xl), int(xh)), lam


def mixing(d) -> Optional[dict]:
    """The :func:`mix_batch` keyword arguments of a ``DataConfig`` (None when mixing is off)."""
    if not (d.mixup > 0 or d.cutmix > 0):
        return None
    return {"mixup": d.mixup, "cutmix": d.cutmix, "prob": d.mixup_prob, "switch_prob": d.mixup_switch_prob}
