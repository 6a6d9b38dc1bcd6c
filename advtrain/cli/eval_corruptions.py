"""``advtrain eval --threat-model corruptions``: the eval command's part for common corruptions
(the evaluation itself: :mod:`advtrain.eval.corruptions`; the card: the one
:func:`advtrain.eval.cards.write_card`, through :mod:`advtrain.cli.eval_model` like every eval)."""
from __future__ import annotations

import sys

from advtrain.cli import eval_model
from advtrain.data.names import num_classes
from advtrain.errors import InputError
from advtrain.eval.cards import CARD_THREAT_MODELS
from advtrain.eval.corruptions import block_size, corruption_folder, evaluate_corruptions, folder_name
from advtrain.eval.settings import CORRUPTIONS
from attacks import NORMS


def add_arguments(parser) -> None:
    parser.add_argument("--threat-model", choices=CARD_THREAT_MODELS,
                        help="Linf/L2/L1: the same as --norm; corruptions: CIFAR-10-C/100-C accuracy "
                             "from --data-root DIR (DIR/CIFAR-10-C/*.npy, clean test set in DIR)")


def requested(args) -> bool:
    """True for ``--threat-model corruptions``; ``Linf``/``L2`` set ``--norm``."""
    if args.threat_model in NORMS:
        args.norm = args.threat_model
    return args.threat_model == CORRUPTIONS


def cli_run(args) -> int:
    """``advtrain eval --threat-model corruptions``: checks first, then model, data, card."""
    from advtrain.data import load_test_arrays
    from advtrain.utils import resolve_device

    eval_model.check_args(args)
    if args.eps_sweep or args.save_adv or args.state_path:
        raise InputError("--eps-sweep, --save-adv and --state-path are for Linf/L2/L1 attacks; drop "
                         "them with --threat-model corruptions")
    folder = folder_name(args.dataset)  # a dataset without a corruptions release: one line
    if args.data_root is None:
        raise InputError(f"--threat-model corruptions reads --data-root DIR holding "
                         f"{folder}/ (and the clean test set); pass --data-root")
    eval_model.card_info(args, CORRUPTIONS, "x")  # --reported and the card names, before any work
    eval_model.check_outputs(args, CORRUPTIONS)
    block_size(corruption_folder(args.data_root, args.dataset), num_classes(args.dataset))  # data first
    device = resolve_device(args.device)
    model, meta = eval_model.load_model(args, device)
    eval_model.check_protocol(args, model, device, meta)
    clean = load_test_arrays(args.dataset, root=args.data_root)  # RobustBench's data_dir
    result = evaluate_corruptions(model, args.data_root, args.dataset, clean, n_ex=args.n_ex,
                                  batch_size=args.batch_size,
                                  log=lambda line: print(line, file=sys.stderr))
    card, side = eval_model.write_card(args, result, meta)
    print(f"clean {result.clean_acc:.2%}  corruptions {result.corruptions_acc:.2%} "
          f"({len(result.per_corruption)} corruptions x {len(result.per_severity)} severities, "
          f"{result.n_per_block} images each)")
    print(f"card: {card}\nsidecar: {side}")
    return 0
