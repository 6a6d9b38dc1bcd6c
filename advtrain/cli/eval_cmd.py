"""``advtrain eval CHECKPOINT --dataset D``: AutoAttack evaluation -> RobustBench card + sidecar.

Loads the checkpoint strictly (trainer format, plain state_dict or reference formats; never
unpickled), evaluates the first ``--n-ex`` test images with AutoAttack, runs the sanity report
(``--no-sanity`` to skip) and writes ``<out>/<dataset>/<norm>/<name>.json`` (+ ``.advtrain.json``).
With ``--robustbench-name`` a RobustBench zoo checkpoint already in ``--model-dir`` is evaluated.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from advtrain.errors import InputError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="AutoAttack evaluation and RobustBench card",
                              description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", help="checkpoint file (.pt / .safetensors)")
    p.add_argument("--dataset", required=True, choices=("cifar10", "cifar100", "imagenet", "imagefolder"),
                   help="imagenet/imagefolder: --data-root DIR with val/<class>/ images (see "
                        "advtrain.cli.folder_eval)")
    p.add_argument("--arch", help="architecture (default: the one recorded in the checkpoint)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-root", help="directory with the CIFAR test set (ImageFolder: with val/)")
    src.add_argument("--data-npz", help="npz file with 'image' (N,32,32,3 uint8) and 'label'")
    p.add_argument("--n-ex", type=int, help="first N test images (default 10000; imagenet: "
                                            "RobustBench's 5000; imagefolder: all)")
    p.add_argument("--subset", default="first", choices=("first", "random"),
                   help="which N images: the first N (RobustBench's protocol, default) or a fixed "
                        "random N (seeded by --subset-seed; for class-sorted files and quick runs)")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of --subset random (default 0)")
    p.add_argument("--norm", default="Linf", help="Linf or L2 (default Linf)")
    p.add_argument("--eps", help="radius, e.g. 8/255 or 0.0314 (default 8/255; imagenet and "
                                 "imagefolder: 4/255)")
    p.add_argument("--version", default="standard", help="standard|plus|rand|custom")
    p.add_argument("--attacks", help="comma-separated attacks for --version custom")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="card name (default: the checkpoint file stem); characters "
                                  "A-Z a-z 0-9 . _ + -, not starting with a dot")
    p.add_argument("--out", default="model_info", help="card directory (default model_info)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing card of the same name (refused otherwise, so "
                        "runs/a/last.pt and runs/b/last.pt cannot overwrite each other's card)")
    card = p.add_argument_group("card metadata (RobustBench ModelInfo fields)")
    card.add_argument("--title", help="card 'name': the paper title (default: --name)")
    card.add_argument("--venue", default="")
    card.add_argument("--link", default="")
    card.add_argument("--authors", default="")
    card.add_argument("--footnote")
    card.add_argument("--additional-data", action="store_true",
                      help="the model was trained with data beyond the training set")
    p.add_argument("--save-adv", metavar="FILE", help="save x_adv / y_adv tensors here")
    p.add_argument("--pgd-steps", type=int, help="also report PGD-K accuracy")
    p.add_argument("--weights", default="model", choices=("model", "ema"))
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--state-path", help="AutoAttack resumable state file")
    p.add_argument("--robustbench-name", help="evaluate this RobustBench zoo model instead")
    p.add_argument("--model-dir", default="checkpoints", help="RobustBench model_dir")
    p.add_argument("--no-sanity", action="store_true", help="skip the sanity report")
    p.add_argument("--sanity-n", type=int, default=100, help="examples for the sanity report")
    p.add_argument("--sanity-steps", type=int, default=10,
                   help="K of the sanity report's PGD-K vs PGD-2K check (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="bf16: autocast (CUDA only), guarded by an fp32 re-run on --guard-n "
                        "random examples; any gap is flagged in the sidecar (default fp32)")
    p.add_argument("--guard-n", type=int, default=100, help="examples re-checked in fp32")
    p.add_argument("--channels-last", action="store_true",
                   help="channels_last memory format (faster convolutions on recent GPUs)")
    p.add_argument("--n-iter", type=int, help="tests/debugging only: APGD/FAB iterations")
    p.add_argument("--n-queries", type=int, help="tests/debugging only: Square queries")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from advtrain.cli.folder_eval import resolve_defaults
    from advtrain.utils import parse_eps, resolve_device

    resolve_defaults(args)
    eps = parse_eps(args.eps)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    _check_args(args)
    _check_outputs(args)  # names and output paths: before loading data or attacking
    device = resolve_device(args.device)
    from advtrain import distributed as D

    if D.launched():  # torchrun: AutoAttack sharded over the ranks, rank 0 writes the card
        device = D.init_from_env(device).device
    model, meta = _load_model(args, device)
    if args.channels_last:
        import torch

        model = model.to(memory_format=torch.channels_last)
    _data_from_checkpoint(args, meta)
    _check_outputs(args)  # again: the test data may now come from the checkpoint's config
    x, y = _load_data(args, model)
    from advtrain.evaluation import evaluate

    if args.precision == "bf16":
        import functools

        from advtrain.evaluation_dist import evaluate_low_precision
        evaluate = functools.partial(evaluate_low_precision, guard_n=args.guard_n)
    result = evaluate(model, x, y, norm=args.norm, eps=eps, version=args.version,
                      attacks=attacks, batch_size=args.batch_size, seed=args.seed, device=device,
                      state_path=args.state_path, return_adv=bool(args.save_adv),
                      pgd_steps=args.pgd_steps, sanity=not args.no_sanity,
                      sanity_n=args.sanity_n, sanity_steps=args.sanity_steps,
                      progress=not args.quiet, n_iter=args.n_iter, n_queries=args.n_queries)
    if not D.is_main():
        return 0
    card, side = _write(args, result, meta)  # first: a blocking flag leaves no file at all
    if args.save_adv:
        _save_adv(args.save_adv, result, y)
    _summary(result, card, side)
    return 0


def _check_args(args) -> None:
    from advtrain.errors import unknown
    from advtrain.evaluation import NORMS, VERSIONS

    if args.norm not in NORMS:
        raise unknown("norm", args.norm, NORMS)
    if args.version not in VERSIONS:
        raise unknown("AutoAttack version", args.version, VERSIONS)
    for flag, value, low in (("--n-ex", args.n_ex, 1), ("--batch-size", args.batch_size, 1),
                             ("--sanity-n", args.sanity_n, 1),
                             ("--sanity-steps", args.sanity_steps, 1)):
        if value is not None and value < low:  # --n-ex None: the whole ImageFolder
            raise InputError(f"{flag} {value} must be >= {low}")
    if args.pgd_steps is not None and args.pgd_steps < 1:
        raise InputError(f"--pgd-steps {args.pgd_steps} must be >= 1")
    if args.robustbench_name is None and args.checkpoint is None:
        raise InputError("give a CHECKPOINT file, or --robustbench-name NAME --model-dir DIR")


def _card_name(args) -> str:
    """--name, else the RobustBench name or the checkpoint file stem; validated as a file name."""
    from advtrain.io import check_model_name

    if args.name is not None:
        return check_model_name(args.name, "--name")
    default = args.robustbench_name or Path(args.checkpoint).stem
    return check_model_name(default, "card name (default: the checkpoint file stem; pass --name)")


def _check_outputs(args) -> None:
    """Refuse, before any work, outputs that cannot be written or would destroy an input: the card
    and sidecar, --save-adv and --state-path must be writable, must not be (or link to) the
    checkpoint, the data or each other; an existing card needs --overwrite."""
    from advtrain import export
    from advtrain.io import check_model_name, check_outputs, check_path, check_writable_dir

    check_path(args.checkpoint, "CHECKPOINT")
    if args.robustbench_name is not None:
        check_model_name(args.robustbench_name, "--robustbench-name")
    name = _card_name(args)
    for flag in ("out", "save_adv", "state_path", "data_npz", "data_root", "model_dir"):
        check_path(getattr(args, flag), "--" + flag.replace("_", "-"))
    folder = Path(args.out) / args.dataset / args.norm
    card, side = folder / f"{name}.json", folder / f"{name}.advtrain.json"
    check_writable_dir(folder)
    for extra in (args.save_adv, args.state_path):
        if extra is not None:
            if os.path.isdir(extra):
                raise InputError(f"{extra} is a directory; --save-adv/--state-path take a file path")
            check_writable_dir(os.path.dirname(os.path.abspath(extra)))
    existing = [str(p) for p in (card, side) if p.exists()]
    if existing and not args.overwrite:
        raise InputError(f"card {existing[0]} already exists (another evaluation named {name!r}); "
                         "pass --name NAME for a new card, or --overwrite to replace it")
    zoo = (export.zoo_path(args.model_dir, args.robustbench_name, args.dataset, args.norm)
           if args.robustbench_name else None)
    check_outputs({"--save-adv": args.save_adv, "--state-path": args.state_path, "card": card,
                   "sidecar": side},
                  {"CHECKPOINT": args.checkpoint, "--data-npz": args.data_npz,
                   "the RobustBench checkpoint": zoo})


def _load_model(args, device):
    from advtrain import export

    if args.robustbench_name:
        model = export.load_zoo_model(args.robustbench_name, dataset=args.dataset,
                                      threat_model=args.norm, model_dir=args.model_dir,
                                      device=device)
        path = export.zoo_path(args.model_dir, args.robustbench_name, args.dataset, args.norm)
        arch = type(model).__name__
        return model, {"arch": arch, "display": _zoo_display(args.robustbench_name, arch),
                       "checkpoint": path, "weights": "model",
                       "name": args.robustbench_name}
    model, info = export.model_from_checkpoint(args.checkpoint, dataset=args.dataset,
                                               arch=args.arch, weights=args.weights,
                                               device=device)
    from advtrain.cards import display_arch

    return model, {"arch": info["arch"], "display": display_arch(info["arch"]),
                   "checkpoint": args.checkpoint, "weights": args.weights,
                   "name": Path(args.checkpoint).stem,
                   "test_data": info["recorded"].get("test_data")}


def _data_from_checkpoint(args, meta) -> None:
    """No --data-root/--data-npz: use the test data the training run was configured with."""
    recorded = meta.get("test_data")
    if args.data_root or args.data_npz or not recorded:
        return
    from advtrain.config_check import recorded_test_data

    recorded = recorded_test_data(recorded, meta["checkpoint"])
    args.data_root, args.data_npz = recorded["root"], recorded["npz"]
    where = args.data_npz or args.data_root
    print(f"note: test data from the checkpoint's training config: {where} (override with "
          "--data-root / --data-npz)", file=sys.stderr)


def _zoo_display(name: str, fallback: str) -> str:
    """``Cui2023Decoupled_WRN-34-10 -> WideResNet-34-10`` (the architecture part of a zoo id)."""
    _, _, tail = name.partition("_")
    if tail.startswith("WRN-"):
        return "WideResNet-" + "-".join(tail[4:].split("-")[:2]).split("_")[0]
    return tail or fallback


def _load_data(args, model=None):
    from advtrain.cli.folder_eval import is_folder_dataset, load_folder_eval
    from advtrain.data import load_test_arrays

    from advtrain.data import num_classes

    if is_folder_dataset(args.dataset):
        return load_folder_eval(args, model)
    if args.subset == "random":
        import torch

        x, y = load_test_arrays(args.dataset, root=args.data_root, npz=args.data_npz)
        if not 1 <= args.n_ex <= len(y):
            raise InputError(f"--n-ex {args.n_ex} but the {args.dataset} test set has {len(y)} "
                             f"images; use 1 <= --n-ex <= {len(y)}")
        gen = torch.Generator().manual_seed(args.subset_seed)
        idx = torch.randperm(len(y), generator=gen)[:args.n_ex].sort().values
        x, y = x[idx].contiguous(), y[idx].contiguous()
    else:
        x, y = load_test_arrays(args.dataset, root=args.data_root, npz=args.data_npz,
                                n_ex=args.n_ex)
    seen, total = int(y.unique().numel()), num_classes(args.dataset)
    if args.subset == "first" and seen < total <= len(y):
        print(f"note: the first {len(y)} test images cover only {seen} of {total} classes (is "
              "the test file ordered by class?); accuracies are not comparable to RobustBench's; "
              "--subset random draws a fixed random subset",
              file=sys.stderr)
    return x, y


def _save_adv(path, result, y) -> None:
    from advtrain.io import atomic_save

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"x_adv": result["x_adv"], "y_adv": result["y_adv"], "y": y.cpu(),
                 "eps": result["eps"], "norm": result["norm"]}, path)


def _write(args, result, meta):
    from advtrain.cards import write_card

    name = _card_name(args)
    extra = {"arch": meta["arch"], "weights": meta["weights"],
             "robustbench_name": args.robustbench_name}
    return write_card(result, out_dir=args.out, name=name, dataset=args.dataset,
                      overwrite=args.overwrite,
                      threat_model=args.norm, architecture=meta["display"],
                      command=["advtrain"] + sys.argv[1:] if sys.argv else None,
                      checkpoint=meta["checkpoint"], extra=extra, title=args.title,
                      venue=args.venue, link=args.link, authors=args.authors,
                      footnote=args.footnote, additional_data=args.additional_data)


def _summary(result, card, side) -> None:
    print(f"clean {result['clean_acc']:.2%}  robust {result['robust_acc']:.2%}  "
          f"(AutoAttack {result['version']}, {result['norm']} eps {result['eps']:.6g}, "
          f"n={result['n_ex']})")
    if "pgd_acc" in result:
        print(f"PGD-{result['pgd_steps']} {result['pgd_acc']:.2%}")
    for f in result["flags"]:
        print(f"warning [{f['code']}]: {f['message']} (see {f['doc']})")
    print(f"card: {card}")
    print(f"sidecar: {side}")
