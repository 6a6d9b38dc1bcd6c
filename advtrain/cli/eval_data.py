"""The test images of ``advtrain eval`` and where they came from (issue 16.7).

:func:`load` returns ``(x, y, provenance)``: the provenance record names the source actually used
(``npz`` file, CIFAR ``binary`` folder or torchvision's ``python`` folder), the file's SHA-256 (npz;
folders are named by path), the subset mode and seed, how many images the test set holds and how
many classes the evaluated images cover. :func:`flags` turns what the checkpoint recorded about its
training data into sidecar flags: the evaluated file is the checkpoint's own training file, the run
trained on its test file, or the images cover only some classes.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import torch

from advtrain.errors import InputError

_KIND = {"npz": "npz", "binary": "binary folder", "torchvision": "python folder"}


def load(args, model=None) -> tuple:
    """``(x, y, provenance)`` of ``--n-ex`` test images chosen by ``--subset`` (ImageFolder datasets:
    :func:`advtrain.cli.folder_eval.load`, at ``model``'s image size)."""
    from advtrain.cli import folder_eval
    from advtrain.data import load_test_arrays, num_classes, resolve_source

    if folder_eval.is_folder_dataset(args.dataset):
        return folder_eval.load(args, model)

    source = resolve_source(args.dataset, "test", root=args.data_root, npz=args.data_npz)
    x, y = load_test_arrays(args.dataset, root=args.data_root, npz=args.data_npz)
    total = len(y)
    if not 1 <= args.n_ex <= total:
        raise InputError(f"--n-ex {args.n_ex} but the {args.dataset} test set has {total} images; "
                         f"use 1 <= n_ex <= {total}")
    if args.subset == "first":
        x, y = x[:args.n_ex].contiguous(), y[:args.n_ex].contiguous()
    else:
        gen = torch.Generator().manual_seed(args.subset_seed)
        idx = torch.randperm(total, generator=gen)[:args.n_ex].sort().values
        x, y = x[idx].contiguous(), y[idx].contiguous()
    seen, classes = int(y.unique().numel()), num_classes(args.dataset)
    if seen < classes and args.subset == "first" and len(y) >= classes:
        print(f"note: the first {len(y)} test images cover only {seen} of {classes} classes (is "
              "the test file ordered by class?); accuracies are not comparable to RobustBench's; "
              "--subset random draws a fixed random subset", file=sys.stderr)
    record = {"source": _KIND.get(source.kind, source.kind), "path": os.path.abspath(source.path),
              "sha256": _sha(source.path), "subset": args.subset,
              "subset_seed": args.subset_seed if args.subset == "random" else None,
              "test_images": total, "n_ex": len(y), "classes_seen": seen, "classes": classes}
    return x, y, record


def _sha(path: str) -> Optional[str]:
    from advtrain.io.safeload import file_sha256

    return file_sha256(path) if os.path.isfile(path) else None


def flags(record: dict, recorded: dict) -> list:
    """Provenance flags for the sidecar (see the module docstring)."""
    from advtrain.eval.sanity import flag

    out = []
    train = _recorded_file(recorded.get("train_data"))
    test = _recorded_file(recorded.get("test_data"))
    if train is not None and _same(train, record["path"], record["sha256"]):
        out.append(flag("eval-on-train-images", f"the evaluated images ({record['path']}) are the "
                        "file this checkpoint was trained on; its accuracies measure memorisation, "
                        "not robustness: evaluate on the test set"))
    if train is not None and test is not None and _same(train, test, _sha(test)):
        out.append(flag("trained-on-test-images", f"this checkpoint was trained on {train}, which "
                        "is also its test file; its test accuracies are not held out"))
    if record["classes_seen"] < record["classes"]:
        out.append(flag("partial-classes", f"the {record['n_ex']} evaluated images cover only "
                        f"{record['classes_seen']} of {record['classes']} classes; the numbers are "
                        "not comparable to a full-test-set card (--subset random, more --n-ex)"))
    return out


def _recorded_file(data) -> Optional[str]:
    npz = data.get("npz") if isinstance(data, dict) else None
    return npz if isinstance(npz, str) and os.path.isfile(npz) else None


def _same(path: str, other: str, other_sha: Optional[str]) -> bool:
    if os.path.exists(other) and os.path.samefile(path, other):
        return True
    return other_sha is not None and _sha(path) == other_sha
