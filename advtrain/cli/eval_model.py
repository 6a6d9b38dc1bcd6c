"""What every ``advtrain eval`` run shares, whatever it measures (AutoAttack in :mod:`eval_cmd`,
common corruptions in :mod:`advtrain.eval.corruptions`): argument checks, the card name and the model."""
from __future__ import annotations

import sys
from pathlib import Path

from advtrain.errors import InputError


def check_args(args) -> None:
    """The arguments every evaluation (attack or corruptions) checks before any work."""
    # --n-ex and every other number: their parser ranges (advtrain.cli.ranges)
    if args.arch is not None:
        from advtrain.models.registry import get_spec
        from advtrain.models.timm_models import is_timm, timm_name

        # unknown -> one line naming the registry's models and patterns (or close timm names)
        (timm_name if is_timm(args.arch) else get_spec)(args.arch)
    if args.robustbench_name is None and args.checkpoint is None:
        raise InputError("give a CHECKPOINT file, or --robustbench-name NAME --model-dir DIR")


def card_name(args) -> str:
    """--name, else the RobustBench name or the checkpoint file stem; validated as a file name."""
    from advtrain.io.names import check_model_name

    if args.name is not None:
        return check_model_name(args.name, "--name")
    default = args.robustbench_name or Path(args.checkpoint).stem
    return check_model_name(default, "card name (default: the checkpoint file stem; pass --name)")


def load_model(args, device):
    """``(model, meta)`` from CHECKPOINT or --robustbench-name, through :mod:`advtrain.hub.loader`."""
    from advtrain.hub import export as export
    from advtrain.eval.cards import display_arch
    from advtrain.hub.loader import load_model_file, load_zoo

    if args.robustbench_name:
        loaded = load_zoo(args.robustbench_name, dataset=args.dataset, threat_model=args.norm,
                          model_dir=args.model_dir, device=device)
        path = export.zoo_path(args.model_dir, args.robustbench_name, args.dataset, args.norm)
        own = loaded.recorded.get("arch")  # an advtrain export: its sidecar names the architecture
        arch = own or type(loaded.model).__name__
        display = display_arch(own) if own else zoo_display(args.robustbench_name, arch)
        return loaded.model, {"arch": arch, "display": display, "checkpoint": path,
                              "weights": "model", "name": args.robustbench_name, "recorded": {}}
    loaded = load_model_file(args.checkpoint, dataset=args.dataset, arch=args.arch,
                             weights=args.weights, device=device)
    model, info = loaded.model, {"arch": loaded.arch, "weights": loaded.weights,
                                 "recorded": loaded.recorded}
    if args.weights is None and info["weights"] == "ema":
        print(f"note: {args.checkpoint}'s best epoch was chosen on its EMA weights; evaluating "
              "those (--weights model for the raw weights)", file=sys.stderr)
    return model, {"arch": info["arch"], "display": display_arch(info["arch"]),
                   "checkpoint": args.checkpoint, "weights": info["weights"],
                   "name": Path(args.checkpoint).stem, "recorded": info["recorded"],
                   "test_data": info["recorded"].get("test_data")}


def check_protocol(args, model, device, meta=None) -> None:
    """The loaded model against the protocol of ``--dataset`` (class count, input size), by one
    forward of one image, before any data is read or attack run (:mod:`advtrain.eval.protocol`);
    for an ImageFolder model, the class names it recorded against the evaluation folder's."""
    from advtrain.data.imagefolder import check_classes, is_folder_dataset
    from advtrain.eval.protocol import check_model, protocol_classes

    what = str(args.checkpoint or args.robustbench_name)
    check_model(model, args.dataset, classes=protocol_classes(args.dataset, args.data_root),
                device=device, what=what)
    recorded = ((meta or {}).get("recorded") or {}).get("classes")
    if recorded is not None and is_folder_dataset(args.dataset):
        from advtrain.eval.protocol import protocol_class_names

        names, where = protocol_class_names(args.dataset, args.data_root)
        check_classes(recorded, names, where, what)


def zoo_display(name: str, fallback: str) -> str:
    """``Cui2023Decoupled_WRN-34-10 -> WideResNet-34-10`` (the architecture part of a zoo id)."""
    _, _, tail = name.partition("_")
    if tail.startswith("WRN-"):
        return "WideResNet-" + "-".join(tail[4:].split("-")[:2]).split("_")[0]
    return tail or fallback
