"""What every ``advtrain eval`` run shares, whatever it measures (AutoAttack in :mod:`eval_cmd`,
ImageNet/ImageFolder data in :mod:`folder_eval`, common corruptions in :mod:`eval_corruptions`):
the defaults from the dataset's facts row, argument checks, the card name, the output-path check
(through the one :func:`advtrain.io.paths.check_outputs`), the model, and the card (through the one
:func:`advtrain.eval.cards.write_card`)."""
from __future__ import annotations

import os
import sys
from typing import Optional
from pathlib import Path

from advtrain.errors import InputError
from advtrain.eval import cards


def resolve_defaults(args, *, corruptions: bool = False) -> None:
    """Fill ``--eps`` / ``--n-ex`` left unset from the dataset's row of
    :data:`advtrain.data.facts.FACTS`: the protocol's radius for ``--norm`` and its test-set size
    (None: a whole ImageFolder ``val/``)."""
    from advtrain.data.facts import facts
    from attacks import NORMS

    row = facts(args.dataset)
    if args.eps is None and not corruptions and args.norm in NORMS:  # a bad --norm: named later
        if args.norm not in row.eps:
            raise InputError(f"--dataset {args.dataset} has no default eps for {args.norm} (no "
                             f"RobustBench {args.norm} leaderboard); give --eps")
        args.eps = row.eps[args.norm]
    if args.n_ex is None:
        args.n_ex = row.test_images
    if row.is_folder and args.data_npz:
        raise InputError(f"--data-npz does not apply to --dataset {args.dataset}; give --data-root DIR "
                         "(with val/<class>/ images)")


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
    from advtrain.hub.loader import load_model_file, load_zoo

    if args.robustbench_name:
        loaded = load_zoo(args.robustbench_name, dataset=args.dataset, threat_model=args.norm,
                          model_dir=args.model_dir, device=device)
        path = export.zoo_path(args.model_dir, args.robustbench_name, args.dataset, args.norm)
        own = loaded.recorded.get("arch")  # an advtrain export: its sidecar names the architecture
        arch = own or type(loaded.model).__name__
        display = cards.display_arch(own) if own else (
            cards.display_arch(None, zoo_name=args.robustbench_name) or arch)
        return loaded.model, {"arch": arch, "display": display, "checkpoint": path,
                              "weights": "model", "name": args.robustbench_name, "recorded": {}}
    loaded = load_model_file(args.checkpoint, dataset=args.dataset, arch=args.arch,
                             weights=args.weights, device=device)
    model, info = loaded.model, {"arch": loaded.arch, "weights": loaded.weights,
                                 "recorded": loaded.recorded}
    if args.weights is None and info["weights"] == "ema":
        print(f"note: {args.checkpoint}'s best epoch was chosen on its EMA weights; evaluating "
              "those (--weights model for the raw weights)", file=sys.stderr)
    return model, {"arch": info["arch"], "display": cards.display_arch(info["arch"]),
                   "checkpoint": args.checkpoint, "weights": info["weights"],
                   "name": Path(args.checkpoint).stem, "recorded": info["recorded"],
                   "test_data": info["recorded"].get("test_data")}


def check_outputs(args, threat_model: str) -> None:
    """Refuse, before any work, outputs that cannot be written or would destroy an input: the card
    and sidecar, the --eps-sweep files, --save-adv and --state-path must be writable, must not be
    (or link to) the checkpoint, the data or each other, nor another name's card files in the card
    folder (all through the one :func:`advtrain.io.paths.check_outputs`); an existing card needs
    --overwrite."""
    from advtrain.hub import export as export
    from advtrain.io.names import check_model_name
    from advtrain.io.paths import check_outputs as check_distinct, check_path, check_writable_dir

    check_path(args.checkpoint, "CHECKPOINT")
    if args.robustbench_name is not None:
        check_model_name(args.robustbench_name, "--robustbench-name")
    name = card_name(args)
    for flag in ("out", "save_adv", "state_path", "data_npz", "data_root", "model_dir"):
        check_path(getattr(args, flag), "--" + flag.replace("_", "-"))
    card, side = cards.card_files(args.out, args.dataset, threat_model, name)
    check_writable_dir(card.parent)
    for extra in (args.save_adv, args.state_path):
        if extra is not None:
            if os.path.isdir(extra):
                raise InputError(f"{extra} is a directory; --save-adv/--state-path take a file path")
            check_writable_dir(os.path.dirname(os.path.abspath(extra)))
    if card.exists() and not args.overwrite:  # a sidecar alone is an interrupted write: replaced
        raise InputError(f"card {card} already exists (another evaluation named {name!r}); "
                         "pass --name NAME for a new card, or --overwrite to replace it")
    zoo = (export.zoo_path(args.model_dir, args.robustbench_name, args.dataset, args.norm)
           if args.robustbench_name else None)
    from advtrain.eval.sweep import FILE_KINDS, SWEEP_SUFFIXES, sweep_paths

    sweep = sweep_paths(card.with_suffix("")) if getattr(args, "eps_sweep", None) else ()
    names = {"csv": "the --eps-sweep CSV", "png": "the --eps-sweep plot",
             "svg": "the --eps-sweep plot (SVG)", "convergence_png": "the --eps-sweep convergence plot",
             "convergence_svg": "the --eps-sweep convergence plot (SVG)"}
    outputs = {"card": card, "sidecar": side,
               **{names[kind]: path for kind, path in zip(FILE_KINDS, sweep)},
               "--save-adv": args.save_adv, "--state-path": args.state_path}
    check_distinct(outputs, {"CHECKPOINT": args.checkpoint, "--data-npz": args.data_npz,
                             "--data-root": args.data_root, "the RobustBench checkpoint": zoo},
                   family=(name, cards.CARD_SUFFIXES + SWEEP_SUFFIXES))


def check_protocol(args, model, device, meta=None) -> None:
    """The loaded model against the protocol of ``--dataset`` (class count, input size), by one
    forward of one image, before any data is read or attack run (:mod:`advtrain.eval.protocol`);
    for an ImageFolder model, the class names it recorded against the evaluation folder's."""
    from advtrain.eval.protocol import check_loaded

    check_loaded(model, args.dataset, what=str(args.checkpoint or args.robustbench_name),
                 recorded_classes=((meta or {}).get("recorded") or {}).get("classes"),
                 data_root=args.data_root, device=device)


def external(args) -> "Optional[cards.ExternalEval]":
    """The :class:`~advtrain.eval.cards.ExternalEval` of ``--external-attack/-acc/-source`` (all
    three or none; attack cards only), or None."""
    given = {f"--external-{k}": getattr(args, f"external_{k}", None)
             for k in ("attack", "acc", "source")}
    if all(v is None for v in given.values()):
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise InputError(f"an external evaluation needs --external-attack, --external-acc and "
                         f"--external-source together; missing {', '.join(missing)}")
    if getattr(args, "threat_model", None) == cards.CORRUPTIONS:
        raise InputError("--external-attack/-acc/-source record an attack evaluation; they do not "
                         "apply to --threat-model corruptions")
    return cards.ExternalEval(attack=args.external_attack, accuracy=args.external_acc,
                              source=args.external_source)


def card_info(args, threat_model: str, architecture: str, test_images=None,
              training=None) -> "cards.CardInfo":
    """The :class:`~advtrain.eval.cards.CardInfo` of this run (``test_images`` None: the
    protocol's test-set size from the dataset's facts row; ``training``: how the checkpoint's model
    was trained, a standard model's card says so in its footnote)."""
    note = cards.training_note(training)
    footnote = ". ".join(n for n in (args.footnote, note) if n) or None
    return cards.CardInfo(name=card_name(args), dataset=args.dataset, threat_model=threat_model,
                          architecture=architecture, title=args.title, venue=args.venue,
                          link=args.link, authors=args.authors, footnote=footnote,
                          additional_data=args.additional_data, reported=args.reported,
                          test_images=test_images, external=external(args))


def write_card(args, result, meta: dict, *, test_images=None, extra=None, files=None) -> tuple:
    """Card + sidecar of ``result`` through the one :func:`advtrain.eval.cards.write_card`."""
    training = meta.get("recorded", {}).get("training")  # from the checkpoint's config
    info = card_info(args, result.threat_model, meta["display"], test_images, training)
    extra = {"arch": meta["arch"], "weights": meta["weights"], "training": training, **(extra or {})}
    return cards.write_card(result, info, out_dir=args.out, overwrite=args.overwrite,
                            command=getattr(args, "argv", None),
                            checkpoint=meta["checkpoint"], extra=extra, files=files)
