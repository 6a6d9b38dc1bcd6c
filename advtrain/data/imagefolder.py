"""ImageFolder datasets: ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg`` (ImageNet,
ImageNet-100, Tiny-ImageNet, any such tree), config ``data: {dataset: imagefolder, root: DIR,
num_classes: N, image_size: 224}`` (``dataset: imagenet``: 1000 classes).

Classes are the sorted sub-folder names (torchvision's ``ImageFolder`` order, which for ImageNet is
RobustBench's ``imagenet_class_to_id_map``). Images are decoded in the DataLoader workers (PIL):

- training (``augment: basic``): RandomResizedCrop(image_size, scale 0.08-1, ratio 3/4-4/3) +
  horizontal flip w.p. 1/2, the draws of sample ``i`` in epoch ``e`` taken from a ``torch.Generator``
  seeded by :func:`~advtrain.data.augment.derive_seed` ``(seed, e, i)`` -- no global RNG is touched,
  so batches are identical for any number of workers or ranks, as on the CIFAR path;
- evaluation (and ``augment: none``): Resize(round(image_size * 256/224)) + CenterCrop(image_size),
  RobustBench's ``Res256Crop224`` at 224 px.

DDP sharding uses the same ``DistributedSampler`` (seeded, reshuffled by ``set_loader_epoch``) as the
CIFAR path. :func:`imagenet_protocol_files` gives RobustBench's 5,000 ImageNet evaluation images.

List files (ImageNet-LT's ``ImageNet_LT_train.txt`` / ``ImageNet_LT_test.txt``): ``data.train_list`` /
``data.val_list`` replace the scan of ``train/`` / ``val/`` by the images a list names, one
``relative/path label`` line each, relative to ``data.root`` (:func:`read_list`: size bounded, paths
kept inside the root, labels in range, every file present). A run on a training list reports its
per-class counts and the many / medium / few-shot accuracies (:func:`shot_group`).
"""
from __future__ import annotations

import math
import os
import struct
from typing import List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, DistributedSampler

from advtrain.data.augment import derive_seed
from advtrain.data.facts import FACTS, FactView, facts
from advtrain.errors import AdvtrainError, DataError, InputError

#: datasets read from an ImageFolder tree, and their fixed class counts (None: data.num_classes);
#: a live view of the facts rows with the ``imagefolder`` source
FOLDER_DATASETS = FactView(lambda row: row.classes, keep=lambda row: row.is_folder)
#: split name -> sub-folder
SPLIT_DIRS = {"train": "train", "test": "val"}
#: RobustBench's Res256Crop224 resize/crop ratio
RESIZE_RATIO = 256 / 224
#: RandomResizedCrop area and aspect-ratio ranges (torchvision's defaults, as in timm and ARES)
RRC_SCALE, RRC_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
#: the number of images in RobustBench's ImageNet evaluation (the imagenet row's test-set size)
IMAGENET_PROTOCOL_N = FACTS["imagenet"].test_images
#: image side when data.image_size is not given (the imagefolder row's: ImageNet's 224 px)
DEFAULT_IMAGE_SIZE = FACTS["imagefolder"].image_size
#: the config key of each split's list file (ImageNet-LT: ImageNet_LT_train.txt / _test.txt)
LIST_KEYS = {"train": "data.train_list", "test": "data.val_list"}
#: the largest list file read (ImageNet-1k's full training list is about 40 MiB)
MAX_LIST_BYTES = 256 * 2 ** 20
#: long-tail groups by training images per class: many > SHOT_MANY, few < SHOT_FEW, else medium
SHOT_MANY, SHOT_FEW = 100, 20
#: the image sides a model may be built for or an image resized to (a recorded 60000 would
#: exhaust memory before anything else failed); checked at config load and at every build
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 2048
#: the most classes a model may be built with (a recorded count builds the last layer)
MAX_CLASSES = 100_000


def check_image_size(value, what: str = "data.image_size") -> int:
    """``value`` if it is an integer side in [MIN_IMAGE_SIZE, MAX_IMAGE_SIZE], else one line."""
    if isinstance(value, bool) or not isinstance(value, int) or \
            not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        raise InputError(f"{what} = {str(value)[:30]} must be an integer in [{MIN_IMAGE_SIZE}, "
                         f"{MAX_IMAGE_SIZE}] pixels, e.g. 224")
    return value


def is_folder_dataset(dataset: object) -> bool:
    return dataset in FOLDER_DATASETS


def image_size_of(d) -> int:
    """``data.image_size`` with its default (a config section is not rewritten: it may be frozen)."""
    return facts(d.dataset).image_size if d.image_size is None else d.image_size


def folder_options(d, split: str = "train") -> dict:
    """The loaders' ImageFolder arguments of a ``DataConfig`` for ``split`` (class count, image size,
    the split's list file: ``data.train_list`` / ``data.val_list``, None to scan the folder); {} for
    other datasets."""
    from advtrain.data.names import num_classes

    if not is_folder_dataset(d.dataset):
        return {}
    return {"num_classes": num_classes(d.dataset, d.num_classes), "image_size": image_size_of(d),
            "list_file": getattr(d, LIST_KEYS[split].split(".")[1])}


def train_augment_options(d) -> dict:
    """The training loader's augmentation keywords of a ``DataConfig`` ({} for other datasets)."""
    from advtrain.data.folder_augment import mixing

    if not is_folder_dataset(d.dataset):
        return {}
    return {"interpolation": d.interpolation, "randaugment": d.randaugment,
            "randaugment_magnitude": d.randaugment_magnitude, "timm_randaugment": d.timm_randaugment,
            "color_jitter": d.color_jitter,
            "reprob": d.reprob, "mixing": mixing(d)}


def check_data_section(d) -> None:
    """Validate the ImageFolder keys of a ``DataConfig`` (once, at config load; defaults are
    applied where read: :func:`image_size_of`, ``names.num_classes(dataset, data.num_classes)``)."""
    if not is_folder_dataset(d.dataset):
        for key in ("num_classes", "image_size", "train_list", "val_list"):
            if getattr(d, key) is not None:
                raise InputError(f"config key 'data.{key}' applies to the imagefolder/imagenet datasets "
                                 f"only; remove it for {d.dataset}")
        check_cifar_augment_keys(d)
        return
    fixed = FOLDER_DATASETS[d.dataset]
    if fixed is not None and d.num_classes not in (None, fixed):
        raise InputError(f"data.num_classes = {d.num_classes} but {d.dataset} has {fixed} classes; "
                         "drop data.num_classes or use dataset: imagefolder")
    if fixed is None and (d.num_classes is None or d.num_classes < 2):
        raise InputError(f"dataset {d.dataset} needs data.num_classes >= 2 (the number of class "
                         "folders under data.root/train)")
    check_image_size(image_size_of(d))
    if fixed is None and d.num_classes > MAX_CLASSES:
        raise InputError(f"data.num_classes = {d.num_classes} must be at most {MAX_CLASSES}")
    unsupported = [k for k, bad in (("synthetic_npz", bool(d.synthetic_npz)), ("holdout", d.holdout > 0),
                                    ("train_npz", d.train_npz), ("test_npz", d.test_npz)) if bad]
    if unsupported:
        raise InputError(f"data.{unsupported[0]} is not supported with dataset {d.dataset}; remove it")
    if d.augment not in ("basic", "none"):
        raise InputError(f"data.augment = {d.augment!r} is not supported with dataset {d.dataset}; "
                         "use basic (RandomResizedCrop + flip) or none")
    _check_augment_keys(d)


#: RandomResizedCrop interpolations of ``data.interpolation``
INTERPOLATIONS = ("bilinear", "bicubic")
#: the ImageFolder augmentation keys and their "off" values
AUGMENT_KEYS = {"interpolation": "bilinear", "randaugment": 0, "timm_randaugment": None,
                "color_jitter": 0.0, "reprob": 0.0, "mixup": 0.0, "cutmix": 0.0}


def _check_augment_keys(d) -> None:
    from advtrain.errors import unknown

    from advtrain.data.folder_augment import RA_BINS

    if d.interpolation not in INTERPOLATIONS:
        raise unknown("interpolation (data.interpolation)", d.interpolation, INTERPOLATIONS)
    if d.augment == "none":
        on = [k for k, off in AUGMENT_KEYS.items() if getattr(d, k) != off]
        if on:
            raise InputError(f"data.{on[0]} augments training images but data.augment is none; "
                             "use data.augment: basic or remove it")
    if d.randaugment < 0 or not 0 <= d.randaugment_magnitude < RA_BINS:
        raise InputError(f"data.randaugment = {d.randaugment} must be >= 0 and "
                         f"data.randaugment_magnitude = {d.randaugment_magnitude} in 0..{RA_BINS - 1}")
    if d.timm_randaugment is not None:
        from advtrain.data.folder_augment import timm_rand_augment

        if d.randaugment:
            raise InputError("data.randaugment and data.timm_randaugment are two RandAugments; keep one "
                             "(data.randaugment: 0 for timm's)")
        timm_rand_augment(d.timm_randaugment, image_size_of(d), d.interpolation)  # parsed once here
    for key in ("color_jitter", "mixup", "cutmix"):
        if getattr(d, key) < 0:
            raise InputError(f"config key 'data.{key}' = {getattr(d, key)} must be >= 0")
    for key in ("reprob", "mixup_prob", "mixup_switch_prob"):
        if not 0 <= getattr(d, key) <= 1:
            raise InputError(f"config key 'data.{key}' = {getattr(d, key)} must be in [0, 1]")


def check_cifar_augment_keys(d) -> None:
    """The ImageFolder augmentation keys are refused for the array datasets (CIFAR ...)."""
    defaults = {**AUGMENT_KEYS, "randaugment_magnitude": 9, "mixup_prob": 1.0, "mixup_switch_prob": 0.5}
    for key, off in defaults.items():
        if getattr(d, key) != off:
            raise InputError(f"config key 'data.{key}' applies to the imagefolder/imagenet datasets "
                             f"only; remove it for {d.dataset}")


def scan(root: str, split: str, num_classes: Optional[int] = None) -> Tuple[List[str], List[Tuple[str, int]]]:
    """(sorted class names, [(path, label), ...] sorted) of ``root/<train|val>``."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not root:  # not at config load: a recipe may name its data only on the command line
        raise InputError("an ImageFolder dataset needs data.root (eval: --data-root): a directory with "
                         "train/ and val/ folders of class sub-folders")
    folder = os.path.join(os.fspath(root), SPLIT_DIRS[split])
    if not os.path.isdir(folder):
        raise DataError(f"{folder} not found; an ImageFolder dataset needs {SPLIT_DIRS[split]}/ with "
                        "one sub-folder of images per class under data.root / --data-root")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if num_classes is not None and len(classes) != num_classes:
        raise DataError(f"{folder} has {len(classes)} class folders but num_classes is {num_classes}; "
                        "set data.num_classes to the number of class folders")
    samples = []
    for label, name in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(os.path.join(folder, name))):
            samples += [(os.path.join(dirpath, f), label) for f in sorted(files)
                        if f.lower().endswith(IMG_EXTENSIONS)]
    if not samples:
        raise DataError(f"{folder} holds no images ({', '.join(IMG_EXTENSIONS)}) in class sub-folders")
    return classes, samples


def read_list(root: str, list_file: str, num_classes: int, key: str = "data.train_list"
              ) -> List[Tuple[str, int]]:
    """``[(path, label), ...]`` of a list file (ImageNet-LT's ``ImageNet_LT_train.txt``): one
    ``relative/path label`` line per image, the path relative to ``root``, in the file's order.

    The file is untrusted: its size is bounded (:data:`MAX_LIST_BYTES`) before it is read; every
    line must be a relative path with an image extension that stays under ``root`` (no absolute
    path, no ``..``, no symlink resolving outside ``root``) and names an existing file, and a label
    in ``[0, num_classes)``. Any violation is one :class:`DataError` naming the file, the line and
    the fix."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not root:
        raise InputError(f"{key} needs data.root (the directory its relative paths start from, e.g. "
                         "the ImageNet root holding train/ and val/)")
    path = os.fspath(list_file)
    if not os.path.isfile(path):
        raise DataError(f"{key} {path} not found; give the list file (lines 'relative/path label')")
    size = os.path.getsize(path)
    if size > MAX_LIST_BYTES:
        raise DataError(f"{key} {path} is {size / 2**20:.1f} MiB, over the {MAX_LIST_BYTES / 2**20:.0f} "
                        "MiB limit for a list file; give the image list (lines 'relative/path label')")
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_LIST_BYTES + 1).decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{key} {path} is not UTF-8 text; give a list of 'relative/path label' "
                        "lines") from None
    base = os.path.realpath(os.fspath(root))
    if not os.path.isdir(base):
        raise DataError(f"data.root {root} not found; {key} paths are relative to it")
    samples, missing = [], []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        where = f"{key} {path} line {n}"
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise DataError(f"{where}: expected 'relative/path label', got {line[:80]!r}")
        rel, label_text = parts
        try:
            label = int(label_text)
        except ValueError:
            raise DataError(f"{where}: label {label_text[:20]!r} is not an integer") from None
        if not 0 <= label < num_classes:
            raise DataError(f"{where}: label {label} is outside [0, {num_classes}); set "
                            "data.num_classes to the list's class count")
        if os.path.isabs(rel) or rel.startswith(("/", "\\")) or ".." in rel.replace("\\", "/").split("/"):
            raise DataError(f"{where}: path {rel[:80]!r} leaves data.root; list paths must be "
                            "relative to data.root, without '..'")
        if not rel.lower().endswith(IMG_EXTENSIONS):
            raise DataError(f"{where}: {rel[:80]!r} is not an image file ({', '.join(IMG_EXTENSIONS)})")
        full = os.path.join(base, rel)
        real = os.path.realpath(full)
        if os.path.commonpath([real, base]) != base:
            raise DataError(f"{where}: {rel[:80]!r} resolves to {real}, outside data.root (a symlink); "
                            "list only files inside data.root")
        if not os.path.isfile(real):
            missing.append(rel)
        samples.append((full, label))
    if missing:
        raise DataError(f"{len(missing)} of the {len(samples)} images of {key} {path} are missing "
                        f"under data.root {root} (e.g. {missing[0]}); check data.root or the list")
    if not samples:
        raise DataError(f"{key} {path} lists no images; give 'relative/path label' lines")
    return samples


def class_counts(samples: Sequence[Tuple[str, int]], num_classes: int) -> List[int]:
    """Images per class of ``samples``."""
    counts = [0] * num_classes
    for _, label in samples:
        counts[label] += 1
    return counts


def shot_group(count: int) -> str:
    """The long-tail group of a class with ``count`` training images: many (> 100), medium
    (20-100), few (< 20) (the LT literature's split; PaCo ``utils.shot_acc``)."""
    return "many" if count > SHOT_MANY else "few" if count < SHOT_FEW else "medium"


def rrc_params(h: int, w: int, generator: torch.Generator) -> Tuple[int, int, int, int]:
    """RandomResizedCrop's (top, left, height, width), drawn from ``generator`` (torchvision's rule)."""
    area = h * w
    log_ratio = (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))
    for _ in range(10):
        u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        target = area * (RRC_SCALE[0] + u[0] * (RRC_SCALE[1] - RRC_SCALE[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            return top, left, ch, cw
    ratio = w / h  # fallback: the central crop of the clamped aspect ratio
    if ratio < RRC_RATIO[0]:
        cw, ch = w, int(round(w / RRC_RATIO[0]))
    elif ratio > RRC_RATIO[1]:
        cw, ch = int(round(h * RRC_RATIO[1])), h
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def eval_transform(image_size: int):
    """Resize(round(size * 256/224)) + CenterCrop(size) + ToTensor: Res256Crop224 at 224 px."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(int(round(image_size * RESIZE_RATIO))),
                               transforms.CenterCrop(image_size), transforms.ToTensor()])


def decode_image(path: str):
    """The one decoder of a user's image file: an RGB PIL image, or one line naming the file for
    anything PIL refuses (truncated or corrupt data, an unknown format, and a header declaring
    more pixels than PIL's decompression-bomb limit, which PIL raises as its own exception, not
    an ``OSError``)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: declares an image too large to decode ({_first_line(e)}); "
                        "remove or replace the file") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as e:
        raise DataError(f"{path}: cannot decode image ({_first_line(e)}); remove or replace the "
                        "file") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def from_workers(batches):
    """``batches`` of a DataLoader, with a user error raised in a worker process as the one line
    the worker raised (DataLoader re-raises it with the worker's traceback in its message)."""
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except AdvtrainError as e:
            raise type(e)(worker_message(e)) from None
        yield batch


def worker_message(e: BaseException) -> str:
    """The message a worker's exception had, out of DataLoader's "Caught X in DataLoader worker
    process N. Original Traceback ... module.X: message" text; the message itself otherwise."""
    text = str(e)
    if "Original Traceback" not in text:
        return text
    prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(prefix):
            return line[len(prefix):]
    return lines[-1]


class FolderDataset(torch.utils.data.Dataset):
    """``[(path, label)]`` -> ``(x float32 in [0,1] 3×S×S, label)``; ``train`` = RRC + flip, then
    the ``augment`` options (:mod:`advtrain.data.folder_augment`; RandomErasing may leave [0, 1])."""

    def __init__(self, samples: Sequence[Tuple[str, int]], image_size: int, train: bool, seed: int = 0,
                 augment: Optional[dict] = None):
        self.samples, self.image_size, self.train, self.seed, self.epoch = list(samples), image_size, train, seed, 0
        self.eval = None if train else eval_transform(image_size)
        self.augment = dict(augment or {})
        self._timm_ra = None  # timm's RandAugment, built on first use (in each worker)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from torchvision.transforms import functional as TF

        path, label = self.samples[i]
        img = decode_image(path)
        if not self.train:
            return self.eval(img), label
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, i))
        a = self.augment
        top, left, h, w = rrc_params(img.height, img.width, gen)
        img = TF.resized_crop(img, top, left, h, w, [self.image_size, self.image_size],
                              interpolation=_interpolation(a.get("interpolation", "bilinear")))
        if float(torch.rand((), generator=gen)) < 0.5:
            img = TF.hflip(img)
        if a.get("randaugment"):
            from advtrain.data.folder_augment import rand_augment

            img = rand_augment(img, a["randaugment"], a["randaugment_magnitude"], gen)
        elif a.get("timm_randaugment"):
            from advtrain.data.folder_augment import global_rngs_seeded, timm_rand_augment

            if self._timm_ra is None:
                self._timm_ra = timm_rand_augment(a["timm_randaugment"], self.image_size,
                                                  a.get("interpolation", "bilinear"))
            with global_rngs_seeded(derive_seed(self.seed, self.epoch, i, 2)):
                img = self._timm_ra(img)
        elif a.get("color_jitter"):
            from advtrain.data.folder_augment import color_jitter

            img = color_jitter(img, a["color_jitter"], gen)
        x = TF.to_tensor(img)
        if a.get("reprob"):
            import random

            from advtrain.data.folder_augment import random_erase

            x = random_erase(x, a["reprob"], random.Random(derive_seed(self.seed, self.epoch, i, 1)), gen)
            x = x.clamp_(0.0, 1.0)  # an image for the attack; revisiting-at's APGD clamps the same way
        return x, label


def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode

    return {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[name]


class _StartSampler(DistributedSampler):
    """The rank's shuffled indices from position ``start`` on (a mid-epoch resume skips unread)."""

    start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])


class FolderLoader:
    """A ``DataLoader`` over a :class:`FolderDataset` with the trainer's loader interface:
    ``set_epoch``, ``len``, ``iter_from(batch)`` (the epoch's batches from ``batch`` on, the earlier
    ones neither decoded nor augmented) and batches moved to ``device`` (when given);
    ``class_counts``: training images per class (of every rank), ``from_list``: read from a list."""

    two_view = False
    class_counts: Optional[List[int]] = None
    from_list = False

    def __init__(self, loader: DataLoader, device=None, mixing: Optional[dict] = None,
                 num_classes: int = 0, seed: int = 0, rank: int = 0):
        self.loader, self.device = loader, None if device is None else torch.device(device)
        self.mixing, self.num_classes, self.seed, self.rank, self.epoch = mixing, num_classes, seed, rank, 0
        self.dataset, self.sampler, self.batch_size = loader.dataset, loader.sampler, loader.batch_size
        self.batch_sampler = loader.batch_sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start: int):
        self.sampler.start = int(start) * self.batch_size  # read when the iterator draws indices
        return self._moved(iter(self.loader), int(start))

    def _moved(self, batches, start: int):
        import numpy as np

        from advtrain.data.folder_augment import mix_batch

        for b, (x, y) in enumerate(from_workers(batches), start):
            if self.device is not None:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.mixing is not None:  # soft targets B×K; draws of (seed, epoch, batch, rank)
                rng = np.random.RandomState(derive_seed(self.seed, self.epoch, b, self.rank) % 2**32)
                x, y, _ = mix_batch(x, y, self.num_classes, rng, **self.mixing)
            yield x, y


def build_folder_train_loader(root: str, *, num_classes: int, image_size: int, augment: str = "basic",
                              batch_size: int = 128, workers: int = 0, seed: int = 0,
                              drop_last: bool = False, subset: Optional[int] = None, rank: int = 0,
                              world_size: int = 1, pin_memory: bool = False, device=None,
                              augment_options: Optional[dict] = None,
                              list_file: Optional[str] = None) -> FolderLoader:
    """Training loader over ``root/train``, or the images of ``list_file`` (:func:`read_list`)
    (``subset``: the first N images of the sorted folder or of the list);
    ``loader.dataset.identity`` is :func:`folder_identity` of the images it reads (a list records
    no class names: its labels are the list's)."""
    if list_file is not None:
        classes, samples = None, read_list(root, list_file, num_classes, LIST_KEYS["train"])
    else:
        classes, samples = scan(root, "train", num_classes)
    if subset is not None:
        if not 1 <= subset <= len(samples):
            raise InputError(f"subset={subset} but {root}/train has {len(samples)} images; "
                             f"use 1 <= subset <= {len(samples)}")
        samples = samples[:subset]
    options = dict(augment_options or {})
    mixing = options.pop("mixing", None)
    data = FolderDataset(samples, image_size, train=augment == "basic", seed=seed, augment=options)
    data.identity = folder_identity(root, classes, samples)
    sampler = _StartSampler(data, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(data, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                        num_workers=workers,  # no global RNG is used: nothing to seed per worker
                        generator=torch.Generator().manual_seed(int(seed)), pin_memory=bool(pin_memory))
    out = FolderLoader(loader, device, mixing=mixing if augment == "basic" else None,
                       num_classes=num_classes, seed=seed, rank=rank)
    out.class_counts, out.from_list = class_counts(samples, num_classes), list_file is not None
    return out


def folder_identity(root: str, classes: Sequence[str], samples: Sequence[Tuple[str, int]]) -> dict:
    """What a training run read from an ImageFolder tree, recorded in its checkpoints: the class
    names in label order (an evaluation folder must have the same), and the number and SHA-256 of
    the list of (relative path, label, size) of the images (a resume refuses a changed list)."""
    import hashlib

    digest = hashlib.sha256()
    base = os.path.join(os.fspath(root), SPLIT_DIRS["train"])
    for path, label in samples:
        try:
            size = os.stat(path).st_size
        except OSError:
            size = -1
        digest.update(f"{os.path.relpath(path, base)}\0{label}\0{size}\n"
                      .encode("utf-8", "surrogateescape"))
    return {"classes": None if classes is None else list(classes), "files": len(samples),
            "list_sha256": digest.hexdigest()}


def check_classes(recorded, classes: Sequence[str], where: str, what: str) -> None:
    """One line naming the first class whose name or position differs between the class list a
    checkpoint recorded (label order) and ``classes`` (those of ``where``); the labels of an
    evaluation are only right when both agree. Nothing recorded (a checkpoint without a class
    list): nothing to compare."""
    if not isinstance(recorded, list) or not all(isinstance(c, str) for c in recorded):
        return
    for i, (a, b) in enumerate(zip(recorded, classes)):
        if a != b:
            raise InputError(f"class {i} is {a[:60]!r} in {what} but {b[:60]!r} in {where}; the "
                             "labels would be shifted: give the folder the model was trained on "
                             "(same class folders, same names)")
    if len(recorded) != len(classes):
        raise InputError(f"{what} records {len(recorded)} classes but {where} has {len(classes)}; "
                         "give the folder the model was trained on")


def load_folder_test(root: str, *, image_size: int, num_classes: Optional[int] = None,
                     n_ex: Optional[int] = None, indices=None, files: Optional[Sequence[str]] = None,
                     workers: int = 0, list_file: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Evaluation tensors of ``root/val`` (or of the images of ``list_file``, :func:`read_list`,
    which needs ``num_classes``): all images, the first ``n_ex``, ``indices`` (or a callable
    ``total -> indices``) of the sorted list, or the relative paths ``files`` (``<wnid>/<file>``,
    labelled by RobustBench's ImageNet class map) in that order."""
    if files is not None:
        samples = _pick_files(root, files)
    elif list_file is not None:
        if num_classes is None:
            raise InputError(f"{LIST_KEYS['test']} needs the number of classes (data.num_classes)")
        samples = read_list(root, list_file, num_classes, LIST_KEYS["test"])
    else:
        samples = scan(root, "test", num_classes)[1]
    if callable(indices):
        samples = [samples[int(k)] for k in indices(len(samples))]
    elif indices is not None:
        samples = [samples[int(k)] for k in indices]
    if n_ex is not None:
        if not 1 <= n_ex <= len(samples):
            raise InputError(f"n_ex={n_ex} but {root}/val gives {len(samples)} images; "
                             f"use 1 <= n_ex <= {len(samples)}")
        samples = samples[:n_ex]
    data = FolderDataset(samples, image_size, train=False)
    loader = DataLoader(data, batch_size=256, shuffle=False, num_workers=workers)
    xs, ys = zip(*from_workers(loader))
    return torch.cat(xs).contiguous(), torch.cat(ys).to(torch.int64)


def _pick_files(root: str, files: Sequence[str]) -> List[Tuple[str, int]]:
    if not root:
        raise InputError("the ImageNet protocol needs --data-root DIR with DIR/val/<wnid>/ images")
    index = imagenet_class_ids()
    folder = os.path.join(os.fspath(root), SPLIT_DIRS["test"])
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(f"{folder} lacks {len(missing)} of the {len(files)} protocol images (e.g. "
                        f"{missing[0]}); give the full ImageNet validation set in class folders, or "
                        "evaluate it as --dataset imagefolder")
    return [(os.path.join(folder, f), index[f.split("/")[0]]) for f in files]


def imagenet_class_ids() -> dict:
    """RobustBench's ImageNet ``wnid -> label`` map (``helper_files/imagenet_class_to_id_map.json``;
    the sorted wnids, as ImageFolder numbers a full ImageNet ``val/``)."""
    import json
    from importlib import resources

    return json.loads(resources.files("robustbench").joinpath("helper_files/imagenet_class_to_id_map.json")
                      .read_text())


def imagenet_protocol_files() -> List[str]:
    """RobustBench's ImageNet evaluation list (``class/ILSVRC2012_val_*.JPEG``, 5,000 lines), from
    the installed robustbench package's ``helper_files/imagenet_test_image_ids.txt``."""
    from importlib import resources

    text = resources.files("robustbench").joinpath("helper_files/imagenet_test_image_ids.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]
