"""``advtrain export CHECKPOINT --name NAME --dataset D``: write a RobustBench model_dir file, or
with ``--format hub`` a folder for a model hub.

Writes ``<model-dir>/<dataset>/<threat-model>/<name>.pt`` (a plain state_dict that
``robustbench.utils.load_model`` loads strictly). For RobustBench zoo names the file is loaded back
through RobustBench and must give identical logits; ``--safetensors`` also writes a
``.safetensors`` file. All files of one export are committed as one.

``--format hub --out DIR [--card CARD.json]`` writes ``DIR/model.safetensors``, ``DIR/config.json``
(what rebuilds the architecture) and ``DIR/README.md`` (a model card with the result card's
numbers and footnote); ``advtrain.hub.hf.AdvtrainModel.from_pretrained(DIR)`` (huggingface_hub)
loads it offline.
"""
from __future__ import annotations

import argparse

from advtrain.hub.loader import WEIGHTS
from advtrain.hub.zoo import ZOO_DATASETS
from attacks import NORMS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export a checkpoint to RobustBench's model_dir",
                              description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="checkpoint file (.pt / .safetensors)")
    p.add_argument("--name", required=True, help="RobustBench id, e.g. Cui2023Decoupled_WRN-34-10")
    p.add_argument("--dataset", required=True, choices=ZOO_DATASETS,
                   help="RobustBench dataset (an ImageFolder model of ImageNet's 1,000 classes exports as imagenet; "
                        "the class count, input size and recorded class names are checked)")
    p.add_argument("--threat-model", default="Linf", choices=NORMS,
                   help="threat model of the export (default Linf); RobustBench has no L1 one: "
                        "an L1 model exports with --format hub")
    p.add_argument("--model-dir", default="checkpoints", help="RobustBench model_dir")
    p.add_argument("--arch", help="architecture (default: the one recorded in the checkpoint)")
    p.add_argument("--weights", default="model", choices=WEIGHTS,
                   help="which weights of a training checkpoint: the model's or the EMA copy "
                        "(default model)")
    p.add_argument("--safetensors", action="store_true", help="also write <name>.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.add_argument("--format", default="robustbench", choices=("robustbench", "hub"),
                   help="robustbench: a model_dir file (default); hub: a folder with "
                        "model.safetensors, config.json and a README.md model card, loadable "
                        "with huggingface_hub (advtrain.hub.hf.AdvtrainModel.from_pretrained)")
    p.add_argument("--out", metavar="DIR", help="--format hub: the folder (default hub/NAME)")
    p.add_argument("--card", metavar="CARD",
                   help="--format hub: the result card (<name>.json, with its sidecar beside it) "
                        "whose numbers and footnote go into README.md")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from advtrain.hub import export as export
    from advtrain.hub.loader import load_model_file

    if args.format == "hub":
        return _run_hub(args)
    if args.out is not None or args.card is not None:
        from advtrain.errors import InputError

        raise InputError("--out and --card belong to --format hub; RobustBench exports go to "
                         "--model-dir")
    export.check_zoo_threat_model(args.threat_model, "--threat-model",  # L1: no RobustBench table
                                  "or export the model with --format hub")
    _check_outputs(args)  # before loading anything
    loaded = load_model_file(args.checkpoint, dataset=args.dataset, arch=args.arch,
                             weights=args.weights)
    _check_protocol(args, loaded)
    path = export.to_robustbench(loaded.model, args.name, args.dataset, args.threat_model,
                                 args.model_dir, overwrite=args.overwrite,
                                 safetensors=args.safetensors)
    print(f"wrote {path} ({loaded.arch}, {args.weights} weights)")
    entry = export.zoo_entry(args.name, args.dataset, args.threat_model)
    if entry is not None:
        print(f"verified: robustbench.utils.load_model({args.name!r}, model_dir="
              f"{str(args.model_dir)!r}, dataset={args.dataset!r}, threat_model="
              f"{args.threat_model!r}) gives identical logits")
    if entry is None or export._is_ours(entry):
        print("note: " + export.registration_hint(path, args.name, args.dataset,
                                                  args.threat_model))
    if args.safetensors:
        print(f"wrote {path.with_suffix('.safetensors')}")
    return 0


def _check_protocol(args, loaded) -> None:
    """The model against the protocol of ``--dataset`` before anything is written, as ``eval``
    checks it (:func:`advtrain.eval.protocol.check_loaded`): class count and input size by one
    forward, and for an ImageNet export of an ImageFolder run the class names it recorded against
    RobustBench's ImageNet class map (labels in another order would score a wrong number)."""
    from advtrain.eval.protocol import check_loaded

    check_loaded(loaded.model, args.dataset, what=str(args.checkpoint),
                 recorded_classes=loaded.recorded.get("classes"),
                 fix="export it under the dataset it was trained for (--dataset)")


def _check_outputs(args) -> None:
    """--name is a safe file name; the export files are writable, not the input checkpoint (or a
    link to it), and the export (its .pt: the files are committed as one, the .pt last, so the
    others without it are leftovers of an interrupted export and are replaced) does not exist
    unless --overwrite."""
    from advtrain.hub import export as export
    from advtrain.errors import InputError
    from advtrain.io.paths import check_outputs, check_path, check_writable_dir
    from advtrain.io.names import check_model_name

    check_path(args.checkpoint, "CHECKPOINT")
    check_path(args.model_dir, "--model-dir")
    check_model_name(args.name, "--name")
    pt = export.zoo_path(args.model_dir, args.name, args.dataset, args.threat_model)
    outputs = {"the export": pt, "its description":
               export.meta_path(args.model_dir, args.name, args.dataset, args.threat_model)}
    if args.safetensors:
        outputs["the safetensors export"] = pt.with_suffix(".safetensors")
    check_writable_dir(pt.parent)
    check_outputs(outputs, {"CHECKPOINT": args.checkpoint},
                  family=(args.name, export.EXPORT_SUFFIXES))
    if not args.overwrite and pt.exists():
        raise InputError(f"{pt} already exists; remove it or pass --overwrite")


def _run_hub(args) -> int:
    """``--format hub``: checks, the card's fields, then the folder (see the module docstring)."""
    from pathlib import Path

    from advtrain.hub import export as export
    from advtrain.hub.loader import load_model_file
    from advtrain.io.names import check_model_name
    from advtrain.io.paths import check_outputs, check_path, check_writable_dir

    check_path(args.checkpoint, "CHECKPOINT")
    check_path(args.out, "--out")
    check_path(args.card, "--card")
    check_model_name(args.name, "--name")
    out = Path(args.out) if args.out else Path("hub") / args.name
    check_writable_dir(out)
    check_outputs({"the hub export": out / export.HUB_WEIGHTS,
                   "its config": out / export.HUB_CONFIG, "its model card": out / export.HUB_README},
                  {"CHECKPOINT": args.checkpoint, "--card": args.card})
    card = _card_fields(args) if args.card else None
    if (out / export.HUB_WEIGHTS).exists() and not args.overwrite:
        from advtrain.errors import InputError

        raise InputError(f"{out / export.HUB_WEIGHTS} already exists; choose another --out or "
                         "pass --overwrite")
    loaded = load_model_file(args.checkpoint, dataset=args.dataset, arch=args.arch,
                             weights=args.weights)
    _check_protocol(args, loaded)
    export.to_hub(loaded.model, loaded.arch, args.dataset, args.name, out,
                  threat_model=args.threat_model, card=card, overwrite=args.overwrite)
    print(f"wrote {out}/ ({export.HUB_WEIGHTS}, {export.HUB_CONFIG}, {export.HUB_README}; "
          f"{loaded.arch}, {args.weights} weights)\nload: from advtrain.hub.hf import "
          f"AdvtrainModel; AdvtrainModel.from_pretrained({str(out)!r})")
    return 0


def _card_fields(args) -> dict:
    """The checked fields of ``--card`` for the model card (read as ``advtrain report`` reads
    cards: untrusted, percentages checked); its dataset must be ``--dataset``."""
    from pathlib import Path

    from advtrain.errors import InputError
    from advtrain.eval.report import card_row

    path = Path(args.card)
    if not path.is_file():
        raise InputError(f"--card {args.card}: no such card file; give the <name>.json that "
                         "advtrain eval wrote")
    row = card_row(path, path.parent)
    if row["dataset"] != args.dataset:
        raise InputError(f"--card {args.card} is a {row['dataset']!r} card but --dataset is "
                         f"{args.dataset!r}; give the card of this model")
    if row["threat_model"] in NORMS and row["threat_model"] != args.threat_model:
        raise InputError(f"--card {args.card} is a {row['threat_model']} card but --threat-model "
                         f"is {args.threat_model}; pass --threat-model {row['threat_model']}")
    pct = (lambda v: None if v is None else f"{v:.2f}")
    return {"dataset": row["dataset"], "threat_model": row["threat_model"], "eps": row["eps"],
            "clean_acc": pct(row["clean"]), row["metric"]: pct(row["robust"]),
            "external": pct(row["external"]), "unreliable": row["unreliable"],
            "evaluation": row["evaluation"], "footnote": row["footnote"]}
