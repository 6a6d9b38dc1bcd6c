"""``advtrain eval --eps-sweep``: the eval command's part for robustness curves (the sweep itself:
:mod:`advtrain.eval.sweep`)."""
from __future__ import annotations

from pathlib import Path

from advtrain.cli import ranges
from advtrain.eval.sweep import FILE_KINDS, masking_check, parse_eps_list, run_sweep, sweep_files


def add_arguments(parser) -> None:
    """``advtrain eval`` options of the sweep (validated by :func:`check_args`)."""
    g = parser.add_argument_group("robustness curve (advtrain/eval/sweep.py)")
    g.add_argument("--eps-sweep", metavar="LIST",
                   help="comma-separated eps, e.g. 0,1/255,2/255,4/255,8/255,16/255: PGD "
                        "accuracy per eps -> <name>.eps_sweep.csv/.png + <name>.convergence.png")
    g.add_argument("--sweep-steps", type=ranges.int_in(1, 10 ** 5), default=20,
                   help="K of the sweep's PGD-K (20)")
    g.add_argument("--sweep-restarts", type=ranges.int_in(1, 10 ** 4), default=2,
                   help="random restarts per eps (2)")


def check_args(args) -> None:
    """Resolve ``args.eps_sweep`` to a list of floats (K and restarts: their parser ranges)."""
    if args.eps_sweep is not None:
        args.eps_sweep = parse_eps_list(args.eps_sweep, norm=args.norm)


def cli_sweep(args, model, x, y, result: dict, device, stem) -> tuple:
    """Run the sweep of ``advtrain eval``: ``(record for the sidecar, {path: bytes} of its files
    beside the card ``stem``)``, written by the card's commit."""
    import sys

    sweep = run_sweep(model, x, y, args.eps_sweep, norm=result["norm"],
                      headline_eps=result["eps"], autoattack_acc=result["robust_acc"],
                      steps=args.sweep_steps, restarts=args.sweep_restarts,
                      batch_size=args.batch_size, seed=args.seed, device=device,
                      log=lambda line: print(line, file=sys.stderr),
                      autoattack={"version": result.settings.version,
                                  "attacks": list(result.attacks)})
    sweep["clean_acc"] = result.clean_acc
    sweep["masking_check"], flags = masking_check(sweep)
    result.flags += flags  # the sidecar's flags (and the card's unreliable)
    files = sweep_files(sweep, stem)
    # names relative to the card's folder, so the record survives moving the folder
    sweep["files"] = {k: Path(v).name for k, v in zip(FILE_KINDS, files)}
    return sweep, files
