"""``advtrain eval --dataset imagenet|imagefolder``: the ImageFolder test data and defaults.

- ``imagenet``: RobustBench's protocol -- Linf 4/255, the 5,000 images listed in robustbench's
  ``helper_files/imagenet_test_image_ids.txt`` (in that order; ``--n-ex N`` takes the first N) read
  from ``--data-root DIR/val/<wnid>/``, Resize(256) + CenterCrop(224) (the model's image size
  scales both); the card's ``test_images`` is the protocol's 5,000;
- ``imagefolder``: every image of ``DIR/val`` in sorted order (or the first ``--n-ex``, or a fixed
  random ``--n-ex`` with ``--subset random``), eps 4/255 by default.

The image size is the model's (``image_size`` recorded by the training config). :func:`load`
returns the same ``(x, y, provenance)`` as :func:`advtrain.cli.eval_data.load`, which calls it.
"""
from __future__ import annotations

import os

import torch

from advtrain.eval.cards import TEST_IMAGES
from advtrain.data.imagefolder import (IMAGENET_PROTOCOL_N, imagenet_protocol_files, is_folder_dataset,
                                       load_folder_test, scan)
from advtrain.errors import InputError

__all__ = ["is_folder_dataset", "load", "load_folder_eval", "resolve_defaults"]

#: default --eps: RobustBench's ImageNet Linf radius for ImageFolder data, CIFAR's otherwise
DEFAULT_EPS = {"imagenet": "4/255", "imagefolder": "4/255"}
#: default --n-ex (None: the whole folder)
DEFAULT_N_EX = {"imagenet": IMAGENET_PROTOCOL_N, "imagefolder": None}


def resolve_defaults(args) -> None:
    """Fill ``--eps`` / ``--n-ex`` left unset with the dataset's protocol values."""
    if args.eps is None:
        args.eps = DEFAULT_EPS.get(args.dataset, "8/255")
    if args.n_ex is None and not is_folder_dataset(args.dataset):
        args.n_ex = TEST_IMAGES
    if is_folder_dataset(args.dataset) and args.data_npz:
        raise InputError(f"--data-npz does not apply to --dataset {args.dataset}; give --data-root DIR "
                         "(with val/<class>/ images)")


def load(args, model) -> tuple:
    """``(x, y, provenance)``: :func:`load_folder_eval` and the record of what was evaluated."""
    x, y = load_folder_eval(args, model)
    n = args.n_ex if args.n_ex is not None else DEFAULT_N_EX[args.dataset]
    protocol = args.dataset == "imagenet"
    total = IMAGENET_PROTOCOL_N if protocol else len(scan(args.data_root, "test")[1])
    classes = 1000 if protocol else int(getattr(model, "num_classes", int(y.max()) + 1))
    record = {"source": "imagenet protocol list" if protocol else "image folder",
              "path": os.path.abspath(os.path.join(args.data_root, "val")), "sha256": None,
              "subset": "first" if protocol or n is None else args.subset,
              "subset_seed": args.subset_seed if args.subset == "random" and not protocol and n else None,
              "test_images": total, "n_ex": len(y), "classes_seen": int(y.unique().numel()),
              "classes": classes}
    return x, y, record


def load_folder_eval(args, model) -> tuple:
    """(x, y) of the evaluation images for ``args`` (see the module docstring)."""
    if not args.data_root:
        raise InputError(f"--dataset {args.dataset} needs --data-root DIR (a folder with val/<class>/ "
                         "images)")
    size = int(getattr(model, "image_size", 224))
    classes = getattr(model, "num_classes", None)
    n = args.n_ex if args.n_ex is not None else DEFAULT_N_EX[args.dataset]
    if args.dataset == "imagenet":
        files = imagenet_protocol_files()
        if n is not None and not 1 <= n <= len(files):
            raise InputError(f"--n-ex {n}: RobustBench's ImageNet protocol has {len(files)} images; "
                             f"use 1 <= --n-ex <= {len(files)}")
        return load_folder_test(args.data_root, image_size=size, num_classes=classes,
                                files=files[:n] if n else files)
    if args.subset == "random" and n is not None:
        gen = torch.Generator().manual_seed(args.subset_seed)

        def pick(total):
            if not 1 <= n <= total:
                raise InputError(f"--n-ex {n} but {args.data_root}/val has {total} images; "
                                 f"use 1 <= --n-ex <= {total}")
            return torch.randperm(total, generator=gen)[:n].sort().values
        return load_folder_test(args.data_root, image_size=size, num_classes=classes, indices=pick)
    return load_folder_test(args.data_root, image_size=size, num_classes=classes, n_ex=n)
