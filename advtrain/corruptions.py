"""Common corruptions (CIFAR-10-C / CIFAR-100-C): RobustBench's third CIFAR threat model.

``advtrain eval CKPT --dataset cifar10 --threat-model corruptions --data-root DIR`` reads DIR the
way RobustBench's ``data_dir`` is read: ``DIR/CIFAR-10-C/<corruption>.npy`` (N*5 images, uint8
N×32×32×3, severities 1..5 stacked in blocks of N) and ``DIR/CIFAR-10-C/labels.npy`` (N or 5N
labels), the clean test set in DIR itself (any layout ``advtrain.data`` reads). It writes

- ``<out>/<dataset>/corruptions/<name>.json``: a RobustBench corruptions card (``clean_acc``,
  ``corruptions_acc`` = mean over the 15 corruptions x 5 severities, as in
  ``robustbench.eval.corruptions_evaluation``), loadable as ``robustbench.utils.ModelInfo``;
- ``<name>.advtrain.json`` beside it: accuracy per corruption and severity, per corruption (mean
  over severities), per severity (mean over corruptions), n per block, versions, command.

The published layout (N = 10,000) is read by RobustBench's own ``load_corruptions_cifar``. A
reduced folder (N < 10,000, e.g. a few images per block for a quick check or a test) is read
here, memory-mapped, with the same slicing: RobustBench's loader hard-codes 10,000 images per
severity (it would slice a reduced file wrongly) and downloads the 2.9 GB archive from Zenodo when
the folder is missing, which advtrain never does (no network at run time).
"""
from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from advtrain.cards import CORRUPTIONS as THREAT_MODEL
from advtrain.cards import TEST_IMAGES, THREAT_MODELS, card_files
from advtrain.data.names import num_classes
from advtrain.errors import DataError, InputError
from attacks import NORMS

SEVERITIES = (1, 2, 3, 4, 5)
#: images per severity block in the published CIFAR-10-C / CIFAR-100-C files
PUBLISHED_N = TEST_IMAGES  # each block is the whole test split, corrupted
FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}


def corruption_names() -> Tuple[str, ...]:
    """RobustBench's list of the 15 corruptions (its constant, imported, not copied)."""
    from robustbench.data import CORRUPTIONS

    return tuple(CORRUPTIONS)


def corruption_folder(root, dataset: str) -> Path:
    """``root/CIFAR-10-C`` with ``labels.npy`` and every corruption file, else one-line error."""
    folder = Path(root) / FOLDERS[dataset]
    missing = [n + ".npy" for n in ("labels",) + corruption_names()
               if not (folder / (n + ".npy")).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing[:3])}"
                        f"{' and %d more' % (len(missing) - 3) if len(missing) > 3 else ''}; "
                        f"--data-root must hold {FOLDERS[dataset]}/ in its published layout "
                        "(<corruption>.npy + labels.npy, as unpacked from Zenodo)")
    return folder


def _open(path: Path) -> np.ndarray:
    from advtrain.data.npz import BAD_HEADER

    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (*BAD_HEADER, OSError) as e:
        raise DataError(f"{path} is not a readable .npy array ({e}); re-extract it") from None


def block_size(folder: Path, classes: int) -> int:
    """N, the images per severity, checked against every file's shape and the labels (integers
    in [0, classes): a label no class can match would lower the accuracy silently)."""
    labels = _open(folder / "labels.npy")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or not len(labels) \
            or int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise DataError(f"{folder / 'labels.npy'}: expected integer labels in [0, {classes}) "
                        f"(one per image), got {labels.dtype} {labels.shape}; re-extract it")
    sizes = set()
    for name in corruption_names():
        arr = _open(folder / f"{name}.npy")
        if arr.ndim != 4 or arr.shape[1:] != (32, 32, 3) or arr.dtype != np.uint8 \
                or len(arr) % len(SEVERITIES) or not len(arr):
            raise DataError(f"{folder / name}.npy holds {arr.dtype} {arr.shape}; expected uint8 "
                            "(5*N, 32, 32, 3): five severities of N images")
        sizes.add(len(arr) // len(SEVERITIES))
    if len(sizes) != 1 or len(labels) not in (min(sizes), 5 * min(sizes)):
        raise DataError(f"{folder}: corruption files hold {sorted(sizes)} images per severity and "
                        f"labels.npy {len(labels)}; all must share one N (labels: N or 5N)")
    return sizes.pop()


def load_block(folder: Path, dataset: str, corruption: str, severity: int, n: int,
               n_block: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of one corruption at one severity, as RobustBench slices them."""
    if n_block == PUBLISHED_N:
        from robustbench.data import load_corruptions_cifar
        from robustbench.model_zoo.enums import BenchmarkDataset

        x, y = load_corruptions_cifar(BenchmarkDataset(dataset), n, severity,
                                      str(folder.parent), [corruption])
        return x, y.long()
    images = _open(folder / f"{corruption}.npy")[(severity - 1) * n_block:][:n]
    labels = _open(folder / "labels.npy")[:n]
    x = torch.from_numpy(np.array(images, dtype=np.float32) / 255).permute(0, 3, 1, 2)
    return x.contiguous(), torch.from_numpy(np.array(labels, dtype=np.int64))


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int, device) -> float:
    from attacks import model_mode

    correct = 0
    with model_mode(model, "eval"):
        for i in range(0, len(y), batch_size):
            logits = model(x[i:i + batch_size].to(device))
            correct += int((logits.argmax(1).cpu() == y[i:i + batch_size]).sum())
    return correct / len(y)


def evaluate_corruptions(model, root, dataset: str, *, n_ex: int, batch_size: int = 500,
                         device="cpu", log=print) -> dict:
    """Accuracy on every corruption x severity block (first ``min(n_ex, N)`` images of each)."""
    import time

    folder = corruption_folder(root, dataset)
    n_block = block_size(folder, num_classes(dataset))
    n = min(n_ex, n_block)
    table: Dict[str, Dict[str, float]] = {}
    names = corruption_names()
    t0 = time.perf_counter()
    for i, name in enumerate(names):
        table[name] = {}
        for s in SEVERITIES:
            x, y = load_block(folder, dataset, name, s, n, n_block)
            table[name][str(s)] = accuracy(model, x, y, batch_size, device)
        eta = (time.perf_counter() - t0) / (i + 1) * (len(names) - i - 1)
        log(f"corruptions {i + 1}/{len(names)} {name}: "
            f"{np.mean(list(table[name].values())):.2%} (ETA {eta:.0f}s)")
    per_corruption = {k: float(np.mean(list(v.values()))) for k, v in table.items()}
    per_severity = {str(s): float(np.mean([table[k][str(s)] for k in names])) for s in SEVERITIES}
    return {"corruptions_acc": float(np.mean(list(per_corruption.values()))),
            "per_corruption_severity": table, "per_corruption": per_corruption,
            "per_severity": per_severity, "n_per_block": n, "n_block": n_block,
            "folder": str(folder)}


# ----------------------------------------------------------------------------- the eval CLI's part
def add_arguments(parser) -> None:
    parser.add_argument("--threat-model", choices=THREAT_MODELS,
                        help="Linf/L2: the same as --norm; corruptions: CIFAR-10-C/100-C accuracy "
                             "from --data-root DIR (DIR/CIFAR-10-C/*.npy, clean test set in DIR)")


def requested(args) -> bool:
    """True for ``--threat-model corruptions``; ``Linf``/``L2`` set ``--norm``."""
    if args.threat_model in NORMS:
        args.norm = args.threat_model
    return args.threat_model == THREAT_MODEL


def cli_run(args) -> int:
    """``advtrain eval --threat-model corruptions``: checks first, then model, data, card."""
    from advtrain.cli import eval_model
    from advtrain.utils import resolve_device

    eval_model.check_args(args)
    if args.eps_sweep or args.save_adv or args.state_path:
        raise InputError("--eps-sweep, --save-adv and --state-path are for Linf/L2 attacks; drop "
                         "them with --threat-model corruptions")
    if args.data_root is None:
        raise InputError(f"--threat-model corruptions reads --data-root DIR holding "
                         f"{FOLDERS[args.dataset]}/ (and the clean test set); pass --data-root")
    name = eval_model.card_name(args)
    paths = _check_outputs(args, name)
    block_size(corruption_folder(args.data_root, args.dataset), num_classes(args.dataset))  # data first
    device = resolve_device(args.device)
    model, meta = eval_model.load_model(args, device)
    clean_acc, n_clean = _clean_accuracy(model, args, device)
    res = evaluate_corruptions(model, args.data_root, args.dataset, n_ex=args.n_ex,
                               batch_size=args.batch_size, device=device,
                               log=lambda line: print(line, file=sys.stderr))
    res.update(clean_acc=clean_acc, n_clean=n_clean)
    write_card(res, paths, args, name, meta)
    print(f"clean {clean_acc:.2%}  corruptions {res['corruptions_acc']:.2%} "
          f"(15 corruptions x 5 severities, {res['n_per_block']} images each)")
    print(f"card: {paths[0]}\nsidecar: {paths[1]}")
    return 0


def _check_outputs(args, name: str) -> tuple:
    from advtrain.cli.paths import check_outputs, check_path, check_writable_dir

    for flag in ("out", "data_root", "checkpoint"):
        check_path(getattr(args, flag), "--" + flag.replace("_", "-"))
    card, side = card_files(args.out, args.dataset, THREAT_MODEL, name)
    check_writable_dir(card.parent)
    if card.exists() and not args.overwrite:  # a sidecar alone is an interrupted write: replaced
        raise InputError(f"card {card} already exists; pass --name NAME for a new card, "
                         "or --overwrite to replace it")
    check_outputs({"card": card, "sidecar": side}, {"CHECKPOINT": args.checkpoint})
    return card, side


def _clean_accuracy(model, args, device) -> tuple:
    """Accuracy on the first --n-ex clean test images of DIR (RobustBench's data_dir)."""
    from advtrain.data import load_test_arrays

    x, y = load_test_arrays(args.dataset, root=args.data_root)
    n = min(args.n_ex, len(y))
    return accuracy(model, x[:n], y[:n], args.batch_size, device), n


def card_fields(res: dict, args, name: str, architecture: str) -> dict:
    """RobustBench's corruptions card; ``reported`` only from --reported or a full evaluation."""
    from advtrain.cards import percent

    full = res["n_per_block"] == PUBLISHED_N
    measured = percent(res["corruptions_acc"]) if full else None
    reported = getattr(args, "reported", None) or measured
    footnote = args.footnote
    if not full:
        part = (f"partial evaluation: {res['n_per_block']} of {PUBLISHED_N} images per corruption "
                f"and severity")
        footnote = f"{footnote}; {part}" if footnote else part
    card = {"link": args.link, "name": args.title or name, "authors": args.authors,
            "additional_data": bool(args.additional_data), "number_forward_passes": 1,
            "dataset": args.dataset, "venue": args.venue, "architecture": architecture,
            "clean_acc": percent(res["clean_acc"]), "reported": reported,
            "corruptions_acc": percent(res["corruptions_acc"]), "footnote": footnote}
    return {k: v for k, v in card.items() if v is not None}  # RobustBench writes no nulls


def write_card(res: dict, paths: tuple, args, name: str, meta: dict) -> None:
    """Card and sidecar committed as one output (both or neither)."""
    from advtrain.atomic import commit_files
    from advtrain.safeload import file_sha256
    from advtrain.utils import git_commit, package_versions

    ckpt = meta.get("checkpoint")
    side = {"name": name, "dataset": args.dataset, "threat_model": THREAT_MODEL, **res,
            "arch": meta["arch"], "weights": meta["weights"],
            "checkpoint": {"path": str(Path(ckpt).resolve()),
                           "sha256": file_sha256(ckpt)} if ckpt else None,
            "command": " ".join(["advtrain"] + sys.argv[1:]), "versions": package_versions(),
            "git_commit": git_commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    card = card_fields(res, args, name, meta["display"])
    Path(paths[0]).parent.mkdir(parents=True, exist_ok=True)
    commit_files({paths[1]: json.dumps(side, indent=2) + "\n",
                  paths[0]: json.dumps(card, indent=2) + "\n"}, primary=paths[0])
