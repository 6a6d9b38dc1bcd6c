"""``advtrain eval --threat-model corruptions``: the eval command's part for common corruptions
(the evaluation itself: :mod:`advtrain.eval.corruptions`)."""
from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

from advtrain.data.names import num_classes
from advtrain.errors import InputError
from advtrain.eval.cards import CORRUPTIONS as THREAT_MODEL
from advtrain.eval.cards import THREAT_MODELS, card_files
from advtrain.eval.corruptions import (FOLDERS, PUBLISHED_N, accuracy, block_size, corruption_folder,
                                       evaluate_corruptions)
from attacks import NORMS


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

    from advtrain.eval.protocol import check_threat_model

    check_threat_model(args.dataset, THREAT_MODEL)  # before FOLDERS[dataset] is looked up
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
    eval_model.check_protocol(args, model, device, meta)
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
    from advtrain.io.paths import check_outputs, check_path, check_writable_dir

    for flag in ("out", "data_root", "checkpoint"):
        check_path(getattr(args, flag), "--" + flag.replace("_", "-"))
    card, side = card_files(args.out, args.dataset, THREAT_MODEL, name)
    check_writable_dir(card.parent)
    if card.exists() and not args.overwrite:  # a sidecar alone is an interrupted write: replaced
        raise InputError(f"card {card} already exists; pass --name NAME for a new card, "
                         "or --overwrite to replace it")
    from advtrain.eval.cards import CARD_SUFFIXES

    check_outputs({"card": card, "sidecar": side}, {"CHECKPOINT": args.checkpoint,
                                                    "--data-root": args.data_root},
                  family=(name, CARD_SUFFIXES))
    return card, side


def _clean_accuracy(model, args, device) -> tuple:
    """Accuracy on the first --n-ex clean test images of DIR (RobustBench's data_dir)."""
    from advtrain.data import load_test_arrays

    x, y = load_test_arrays(args.dataset, root=args.data_root)
    n = min(args.n_ex, len(y))
    return accuracy(model, x[:n], y[:n], args.batch_size, device), n


def card_fields(res: dict, args, name: str, architecture: str) -> dict:
    """RobustBench's corruptions card; ``reported`` only from --reported or a full evaluation."""
    from advtrain.eval.cards import percent

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
    from advtrain.io.atomic import commit_files
    from advtrain.io.safeload import file_sha256
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
