"""``advtrain train CONFIG.yaml [key=value ...] [--resume RUN_DIR] [--force] [--run-dir DIR]``.

Examples::

    advtrain train configs/gkl_at_cifar10.yaml
    advtrain train configs/cpu/tiny_trades.yaml optim.epochs=2 objective.beta=6
    advtrain train --resume runs/gkl_at_cifar10            # continue an interrupted run
"""
from __future__ import annotations

import argparse
import os

from advtrain.errors import InputError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="adversarially train a model from a YAML config",
        description="Train from a YAML config (see configs/); key=value pairs override it, e.g. "
                    "optim.epochs=2 objective.beta=6 attack.eps=8/255.",
        epilog="Config keys: every section (run, data, model, attack, optim, objective, log, ...) "
               "and key, with its default and meaning, is documented in docs/CONFIG.md; each "
               "objective's own options in advtrain/objectives/<name>.py; worked examples in "
               "configs/ (configs/cpu/ for CPU-sized runs).")
    p.add_argument("config", nargs="?", help="YAML config (optional with --resume)")
    p.add_argument("overrides", nargs="*", help="dotted overrides section.key=value")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--force", action="store_true",
                   help="resume even if the config differs from the run's")
    p.add_argument("--run-dir", metavar="DIR", help="run directory (default run.out_dir/run.name)")
    p.set_defaults(func=run)
    p.__class__ = _intermixed(type(p))


def _intermixed(cls):
    """``cls`` parsing options and positionals in any order (``CONFIG --run-dir D k=v`` works)."""

    class Intermixed(cls):
        _inside = False

        def parse_known_args(self, args=None, namespace=None):
            if self._inside:  # parse_known_intermixed_args calls back into this method
                return super().parse_known_args(args, namespace)
            self._inside = True
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._inside = False

    return Intermixed


def run(args: argparse.Namespace) -> int:
    from advtrain import config as C
    from advtrain.train.loop import fit

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not os.path.isfile(config):
        overrides.insert(0, config)  # `advtrain train --resume DIR key=value`
        config = None
    if args.resume and args.run_dir and os.path.abspath(args.resume) != os.path.abspath(args.run_dir):
        raise InputError("--resume RUN_DIR and --run-dir DIR disagree; give only --resume RUN_DIR")
    if config is None and not args.resume:
        raise InputError("no config given; e.g. advtrain train configs/gkl_at_cifar10.yaml")
    if config is None:
        config = os.path.join(args.resume, "config.yaml")
        if not os.path.isfile(config):
            raise InputError(f"{config} not found; pass the config file as well")
    cfg = C.load(config, overrides)
    run_dir = fit(cfg, run_dir=args.resume or args.run_dir, resume=bool(args.resume), force=args.force)
    from advtrain.distributed import is_main

    if is_main():  # under torchrun, once
        print(f"advtrain train: done; run directory {run_dir}")
    return 0
