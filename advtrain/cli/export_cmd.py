"""``advtrain export CHECKPOINT --name NAME --dataset D``: write a RobustBench model_dir file.

Writes ``<model-dir>/<dataset>/<threat-model>/<name>.pt`` (a plain state_dict that
``robustbench.utils.load_model`` loads strictly). For RobustBench zoo names the file is loaded back
through RobustBench and must give identical logits; ``--safetensors`` also writes a
``.safetensors`` file. All files of one export are committed as one.
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
                   help="RobustBench dataset (a model trained on an ImageFolder exports as imagenet)")
    p.add_argument("--threat-model", default="Linf", choices=NORMS)
    p.add_argument("--model-dir", default="checkpoints", help="RobustBench model_dir")
    p.add_argument("--arch", help="architecture (default: the one recorded in the checkpoint)")
    p.add_argument("--weights", default="model", choices=WEIGHTS)
    p.add_argument("--safetensors", action="store_true", help="also write <name>.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from advtrain.hub import export as export
    from advtrain.hub.loader import load_model_file

    _check_outputs(args)  # before loading anything
    loaded = load_model_file(args.checkpoint, dataset=args.dataset, arch=args.arch,
                             weights=args.weights)
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
