"""The ``advtrain`` command line: ``advtrain {train,eval,export,average} ...``.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` which registers the
subcommand and sets ``func`` (called with the parsed namespace, returning an exit code).
User mistakes raise :class:`advtrain.errors.AdvtrainError` and are printed as one line.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from advtrain.errors import AdvtrainError

#: subcommand modules, in the order ``--help`` lists them
SUBCOMMANDS = ("train", "eval", "export", "average")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advtrain",
        description="Adversarial training and AutoAttack/RobustBench evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"advtrain.cli.{name}_cmd")
        except ModuleNotFoundError as e:  # a subcommand not built yet
            if e.name != f"advtrain.cli.{name}_cmd":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AdvtrainError as e:
        print(f"advtrain {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"advtrain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
