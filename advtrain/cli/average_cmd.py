"""``advtrain average RUN_DIR [--tau T] [--start S] [--end E] [--key model|ema]``.

Post-hoc per-epoch weight average of a run's ``epoch_{i}.pt`` (SPEC 5.4), written as
``RUN_DIR/average_tau{tau}_{start}_{end}.pt`` (``average_ema_...`` for ``--key ema``; readable by
``advtrain eval``). A flag left out takes
its value from the run's recipe, the ``average:`` section of ``RUN_DIR/config.yaml``; without that
file, the reference's ``swa.py 0.9 1`` up to the last epoch checkpoint.
"""
from __future__ import annotations

import argparse

from advtrain.hub.loader import WEIGHTS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "average", help="per-epoch EMA of a run's epoch checkpoints (the reference swa.py)",
        description="avg = theta_start, then avg <- (1-tau) theta_i + tau avg for i = start+1..end. "
                    "Flags left out come from the run's config.yaml (average: tau, start, end).")
    p.add_argument("run_dir", help="run directory written by 'advtrain train'")
    p.add_argument("--tau", type=float, default=None,
                   help="decay (default: the run's average.tau; 0.9 without config.yaml)")
    p.add_argument("--start", type=int, default=None,
                   help="first epoch (default: the run's average.start; 1 without config.yaml)")
    p.add_argument("--end", type=int, default=None,
                   help="last epoch (default: the run's average.end; the last available without "
                        "config.yaml)")
    p.add_argument("--key", default="model", choices=WEIGHTS,
                   help="which weights of the checkpoints to average (default model)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from advtrain.train.average import average_run, run_average_settings

    recipe, source = run_average_settings(args.run_dir)
    given = {"tau": args.tau, "start": args.start, "end": args.end}
    settings = {k: recipe[k] if v is None else v for k, v in given.items()}
    if any(v is None for v in given.values()):
        print(f"advtrain average: tau {settings['tau']:g}, start {settings['start']}, end "
              f"{settings['end'] if settings['end'] is not None else 'last'} ({source} for unset flags)")
    path = average_run(args.run_dir, key=args.key, **settings)
    print(f"advtrain average: wrote {path}")
    return 0
