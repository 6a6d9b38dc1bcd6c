"""``advtrain eval CHECKPOINT --dataset D``: AutoAttack evaluation -> RobustBench card + sidecar.

Loads the checkpoint strictly (trainer format, plain state_dict or reference formats; never
unpickled), evaluates the first ``--n-ex`` test images with AutoAttack, runs the sanity report
(``--no-sanity`` to skip) and writes ``<out>/<dataset>/<norm>/<name>.json`` (+ ``.advtrain.json``).
With ``--robustbench-name`` a RobustBench zoo checkpoint already in ``--model-dir`` is evaluated.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from advtrain.cli import eval_model, ranges
from advtrain.cli.eval_model import card_name, check_args, load_model
from advtrain.data.facts import FACTS
from advtrain.eval.cards import card_files
from advtrain.eval.settings import PRECISIONS
from advtrain.hub.loader import WEIGHTS
from advtrain.models import list_models
from attacks import NORMS
from attacks.autoattack import VERSIONS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="AutoAttack evaluation and RobustBench card",
                              description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", help="checkpoint file (.pt / .safetensors)")
    p.add_argument("--dataset", required=True, choices=tuple(FACTS),
                   help="imagenet/imagefolder: --data-root DIR with val/<class>/ images "
                        "(advtrain.cli.folder_eval)")
    p.add_argument("--arch", help="architecture: " + ", ".join(list_models()) + ", or "
                   "wrn-<depth>-<width>[-silu] such as wrn-16-2 (default: the one recorded in the "
                   "checkpoint or in the sidecar of an advtrain export)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-root", help="directory with the CIFAR test set (ImageFolder: with val/)")
    src.add_argument("--data-npz", help="npz file with 'image' (N,32,32,3 uint8) and 'label'")
    p.add_argument("--n-ex", type=ranges.COUNT, help="first N test images (default: the protocol's test set, "
                                            "CIFAR 10000, imagenet RobustBench's 5000; imagefolder: all)")
    p.add_argument("--subset", default="first", choices=("first", "random"),
                   help="which N images: the first N (RobustBench's protocol, default) or a fixed "
                        "random N (seeded by --subset-seed; for class-sorted files and quick runs)")
    p.add_argument("--subset-seed", type=ranges.SEED, default=0, help="seed of --subset random (default 0)")
    p.add_argument("--norm", default="Linf", help=" or ".join(NORMS) + " (default Linf)")
    p.add_argument("--eps", help="radius, e.g. 8/255 or 0.0314 (default: the dataset's for --norm, "
                   "CIFAR Linf 8/255, L2 0.5; imagenet and imagefolder Linf 4/255); the card writes "
                   "k/255 as RobustBench does")
    p.add_argument("--version", default="standard", help="|".join(VERSIONS))
    p.add_argument("--attacks", help="comma-separated attacks for --version custom")
    p.add_argument("--batch-size", type=ranges.COUNT, default=500,
                   help="images per forward/attack batch (default 500; lower it if the device "
                        "runs out of memory: the numbers do not change)")
    p.add_argument("--seed", type=ranges.SEED, default=0,
                   help="seed of AutoAttack's random starts and the sanity report's PGD (default "
                        "0); the sidecar records it")
    p.add_argument("--name", help="card name (default: the checkpoint file stem); characters "
                                  "A-Z a-z 0-9 . _ + -, not starting with a dot")
    p.add_argument("--out", default="model_info", help="card directory (default model_info)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing card of the same name (refused otherwise, so "
                        "runs/a/last.pt and runs/b/last.pt cannot overwrite each other's card)")
    card = p.add_argument_group("card metadata (RobustBench ModelInfo fields)")
    card.add_argument("--title", help="card 'name': the paper title (default: --name)")
    card.add_argument("--venue", default="", help="card 'venue', e.g. 'NeurIPS 2024'")
    card.add_argument("--link", default="", help="card 'link': the paper's URL")
    card.add_argument("--authors", default="", help="card 'authors', comma-separated")
    card.add_argument("--footnote", help="your note; a partial evaluation adds what ran")
    card.add_argument("--reported", metavar="PERCENT",
                      help="the paper's robust accuracy (card 'reported'); default: the measured "
                           "one for a full standard run, else absent")
    card.add_argument("--additional-data", action="store_true",
                      help="the model was trained with data beyond the training set")
    card.add_argument("--external-attack", metavar="NAME",
                      help="an external/adaptive evaluation of this model, e.g. 'APGD + BPDA' "
                           "(with --external-acc and --external-source): the card's 'external' "
                           "is the lower of it and AutoAttack, as in RobustBench")
    card.add_argument("--external-acc", metavar="PERCENT",
                      help="robust accuracy of --external-attack, a percentage (e.g. 73.10)")
    card.add_argument("--external-source", metavar="URL",
                      help="where --external-attack's number is published (URL or citation)")
    p.add_argument("--save-adv", metavar="FILE", help="save x_adv / y_adv tensors here")
    p.add_argument("--pgd-steps", type=ranges.STEPS, help="also report PGD-K accuracy")
    p.add_argument("--weights", choices=WEIGHTS,
                   help="default: the weights a best.pt was chosen on (ema when the held-out "
                        "scoring used EMA), else model")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--state-path", help="AutoAttack resumable state file")
    p.add_argument("--robustbench-name", help="evaluate this RobustBench zoo model instead")
    p.add_argument("--model-dir", default="checkpoints", help="RobustBench model_dir")
    p.add_argument("--no-sanity", action="store_true", help="skip the sanity report")
    p.add_argument("--sanity-n", type=ranges.COUNT, default=100, help="examples for the sanity report")
    p.add_argument("--sanity-steps", type=ranges.STEPS, default=10,
                   help="K of the sanity report's PGD-K vs PGD-2K check (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="bf16: autocast (CUDA only), guarded by an fp32 re-run on --guard-n "
                        "random examples; any gap is flagged in the sidecar (default fp32)")
    p.add_argument("--guard-n", type=ranges.COUNT, default=100, help="examples re-checked in fp32")
    p.add_argument("--channels-last", action="store_true",
                   help="channels_last memory format (faster convolutions on recent GPUs)")
    p.add_argument("--n-iter", type=ranges.STEPS, help="APGD/FAB iterations (weaker than AutoAttack's 100; "
                   "the card says so)")
    p.add_argument("--n-restarts", type=ranges.STEPS, help="APGD/FAB/Square restarts (default: the version's)")
    p.add_argument("--n-queries", type=ranges.STEPS, help="Square queries (AutoAttack: 5000)")
    p.add_argument("--n-targets", type=ranges.STEPS, help="APGD-T/FAB-T target classes (AutoAttack: 9)")
    from advtrain.cli import eval_corruptions as corruptions, eval_sweep as sweep
    sweep.add_arguments(p)
    corruptions.add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from advtrain.cli import eval_corruptions as corruptions, eval_sweep as sweep

    on_corruptions = corruptions.requested(args)  # --threat-model Linf/L2/L1 sets --norm
    eval_model.resolve_defaults(args, corruptions=on_corruptions)  # unset: the dataset's facts
    sweep.check_args(args)
    eval_model.external(args)  # all three --external-* or none (attack cards only), before any work
    if on_corruptions:
        return corruptions.cli_run(args)
    settings = _settings(args)  # every evaluation setting, checked once, before any work
    _check_args(args)
    eval_model.check_outputs(args, args.norm)  # names and output paths: before data or attacks
    from advtrain import distributed as D
    from advtrain.utils import resolve_device

    device = resolve_device(args.device)
    if D.launched():  # torchrun: AutoAttack sharded over the ranks, rank 0 writes the card
        device = D.init_from_env(device).device
    model, meta = load_model(args, device)
    if args.channels_last:
        import torch

        model = model.to(memory_format=torch.channels_last)
    _data_from_checkpoint(args, meta)
    eval_model.check_outputs(args, args.norm)  # again: the test data may come from the checkpoint
    eval_model.check_protocol(args, model, device, meta)  # classes, size: one forward
    from advtrain.cli import eval_data
    from advtrain.eval.evaluator import evaluate

    x, y, data = eval_data.load(args, model)
    result = evaluate(model, x, y, settings, device=device, state_path=args.state_path,
                      return_adv=bool(args.save_adv))
    result.flags += eval_data.flags(data, meta.get("recorded", {}))
    from advtrain.eval.sanity import standard_model

    result.flags = standard_model(result.flags, result.robust_acc, meta.get("recorded", {}).get("training"))
    if not D.is_main():
        return 0
    if args.eps_sweep:  # ux: robustness curve beside the card, recorded in the sidecar
        stem = card_files(args.out, args.dataset, args.norm, card_name(args))[0].with_suffix("")
        meta["eps_sweep"], meta["files"] = sweep.cli_sweep(args, model, x, y, result, device, stem)
    card, side = _write(args, result, meta, data)  # first: a blocking flag leaves no file at all
    if args.save_adv:
        _save_adv(args.save_adv, result, y)
    _summary(result, card, side)
    return 0


def _settings(args):
    """The one :class:`EvalSettings` of this run (eps as typed: a note when it is not k/255)."""
    from advtrain.eval.settings import EvalSettings, eps_note

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    settings = EvalSettings(
        norm=args.norm, eps=args.eps, version=args.version, attacks=attacks, seed=args.seed,
        batch_size=args.batch_size, precision=args.precision, n_iter=args.n_iter,
        n_restarts=args.n_restarts, n_queries=args.n_queries, n_targets=args.n_targets,
        pgd_steps=args.pgd_steps, sanity=not args.no_sanity, sanity_n=args.sanity_n,
        sanity_steps=args.sanity_steps, guard_n=args.guard_n, progress=not args.quiet)
    note = eps_note(settings.eps)
    if note:
        print(note, file=sys.stderr)
    return settings


def _check_args(args) -> None:
    check_args(args)
    eval_model.card_info(args, args.norm, "x", 1)  # --reported and the card names, before any work


def _data_from_checkpoint(args, meta) -> None:
    """No --data-root/--data-npz: use the test data the training run was configured with."""
    recorded = meta.get("test_data")
    if args.data_root or args.data_npz or not recorded:
        return
    from advtrain.config.check import recorded_test_data

    recorded = recorded_test_data(recorded, meta["checkpoint"])
    args.data_root, args.data_npz = recorded["root"], recorded["npz"]
    where = args.data_npz or args.data_root
    print(f"note: test data from the checkpoint's training config: {where} (override with "
          "--data-root / --data-npz)", file=sys.stderr)


def _save_adv(path, result, y) -> None:
    from advtrain.io.atomic import atomic_save

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"x_adv": result.x_adv, "y_adv": result.y_adv, "y": y.cpu(),
                 "eps": result.settings.eps, "norm": result.settings.norm}, path)


def _write(args, result, meta, data):
    """The card through the one writer; the test-set size is the protocol's (the dataset's facts
    row), or the folder's for a dataset without one (an ImageFolder tree)."""
    whole = data["test_images"] if FACTS[args.dataset].test_images is None else None
    extra = {"robustbench_name": args.robustbench_name, "data": data,
             "teacher": meta["recorded"].get("teacher")}
    extra.update({k: meta[k] for k in ("eps_sweep",) if k in meta})  # ux: sweep record
    return eval_model.write_card(args, result, meta, test_images=whole, extra=extra,
                                 files=meta.get("files"))


def _summary(result, card, side) -> None:
    from advtrain.utils import format_eps

    s = result.settings
    print(f"clean {result.clean_acc:.2%}  robust {result.robust_acc:.2%}  "
          f"(AutoAttack {s.version}, {s.norm} eps {format_eps(s.eps)}, n={result.n_ex})")
    if result.pgd_acc is not None:
        print(f"PGD-{s.pgd_steps} {result.pgd_acc:.2%}")
    for f in result.flags:
        expected = f" ({f['expected']})" if f.get("expected") else ""
        print(f"warning [{f['code']}]: {f['message']}{expected} (see {f['doc']})")
    from advtrain.eval.sanity import suggest_adaptive

    advice = suggest_adaptive(result.flags)
    if advice:
        print(f"suggestion: {advice}")
    print(f"card: {card}")
    print(f"sidecar: {side}")
