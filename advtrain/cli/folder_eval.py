"""``advtrain eval --dataset imagenet|imagefolder``: the ImageFolder test data and defaults.

Defaults (``--eps``, ``--n-ex``) come from the dataset's row in :data:`advtrain.data.facts.FACTS`
(:func:`advtrain.cli.eval_model.resolve_defaults`), the evaluation and the card from the same
evaluator, accuracy loop and card writer as CIFAR's (:mod:`advtrain.cli.eval_cmd`).

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

from advtrain.data.facts import facts
from advtrain.data.imagefolder import imagenet_protocol_files, is_folder_dataset, load_folder_test, scan
from advtrain.errors import InputError

__all__ = ["is_folder_dataset", "load", "load_folder_eval"]


def _protocol_list(dataset: str) -> bool:
    """Evaluated on RobustBench's ImageNet list (the imagenet row), not on the whole folder."""
    return facts(dataset).robustbench == "imagenet"


def load(args, model) -> tuple:
    """``(x, y, provenance)``: :func:`load_folder_eval` and the record of what was evaluated."""
    x, y = load_folder_eval(args, model)
    n = args.n_ex
    protocol = _protocol_list(args.dataset)
    row = facts(args.dataset)
    total = row.test_images if protocol else len(scan(args.data_root, "test")[1])
    classes = row.classes if protocol else int(getattr(model, "num_classes", int(y.max()) + 1))
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
    n = args.n_ex
    if _protocol_list(args.dataset):
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
