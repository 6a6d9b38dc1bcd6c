"""``advtrain average RUN_DIR [--tau 0.9] [--start 1] [--end E] [--key model|ema]``.

Post-hoc per-epoch weight average of a run's ``epoch_{i}.pt`` (SPEC 5.4), written as
``RUN_DIR/average_tau{tau}_{start}_{end}.pt`` (readable by ``advtrain eval``).
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "average", help="per-epoch EMA of a run's epoch checkpoints (the reference swa.py)",
        description="avg = theta_start, then avg <- (1-tau) theta_i + tau avg for i = start+1..end.")
    p.add_argument("run_dir", help="run directory written by 'advtrain train'")
    p.add_argument("--tau", type=float, default=0.9, help="decay (default 0.9, as the reference)")
    p.add_argument("--start", type=int, default=1, help="first epoch (default 1)")
    p.add_argument("--end", type=int, default=None, help="last epoch (default: last available)")
    p.add_argument("--key", default="model", choices=("model", "ema"),
                   help="which weights of the checkpoints to average (default model)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from advtrain.hooks.average import average_run

    path = average_run(args.run_dir, tau=args.tau, start=args.start, end=args.end, key=args.key)
    print(f"advtrain average: wrote {path}")
    return 0
