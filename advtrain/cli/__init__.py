"""``advtrain`` command line: ``advtrain {train,eval,export,average,report,external} ...``, ``--version``.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` which registers the
subcommand and sets ``func`` (called with the parsed namespace, returning an exit code).
User mistakes raise :class:`advtrain.errors.AdvtrainError` and are printed as one line (exit 2; under
torchrun by rank 0 only, as every rank raises the same error).
A file system refusal (disk full, read-only, a path under a regular file, no permission) is printed as
one line naming the path and the fix (exit 1); other exceptions are bugs and keep their traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import platform
import sys
from typing import Optional, Sequence

from advtrain.errors import AdvtrainError

#: subcommand modules, in the order ``--help`` lists them
SUBCOMMANDS = ("train", "eval", "export", "average", "report", "external")


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (with a did-you-mean for a bad choice), not the
    full usage block: ``advtrain eval: error: argument --dataset: invalid choice: 'cifar-10';
    did you mean 'cifar10'? (choices: cifar10, cifar100); see advtrain eval --help``."""

    def error(self, message: str):
        import re

        from advtrain.errors import did_you_mean

        bad = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if bad:
            choices = [c.strip().strip("'") for c in bad.group(2).split(",")]
            message = (message[:bad.start()] + f"invalid choice: {bad.group(1)!r};"
                       f"{did_you_mean(bad.group(1), choices)} (choices: {', '.join(choices)})")
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")

    def format_help(self) -> str:
        """Help without the reStructuredText markup of the docstrings it is built from
        (``code``, :func:`name`): a terminal shows it literally."""
        return plain_text(super().format_help())


def plain_text(text: str) -> str:
    """``:func:`x``` -> ``x``; double and single backticks removed."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]*)`", r"\1", text)
    return text.replace("``", "").replace("`", "")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="advtrain",
        description="Adversarial training and AutoAttack/RobustBench evaluation.",
    )
    parser.add_argument("--version", action="version", version=version_line(),
                        help="print advtrain's and torch's versions and exit")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}",
                                parser_class=_Parser)
    sub.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"advtrain.cli.{name}_cmd").add_parser(sub)
    return parser


def version_line() -> str:
    """``advtrain 0.1.0 (torch 2.14.1, python 3.11.2)``; torch's version read, not imported."""
    from importlib import metadata

    from advtrain import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"advtrain {__version__} (torch {torch_version}, python {platform.python_version()})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    from attacks import AttackError  # attacks/ imports nothing from advtrain: its user errors map here

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (one line, see _Parser) or --help: return its status
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    args.argv = ["advtrain", *argv]  # the command a card's sidecar records (also for main([...]))

    try:
        if args.command in ("train", "eval"):  # the launch environment, before anything else
            from advtrain.distributed import check_launch_env

            check_launch_env()
        status = int(args.func(args) or 0)
        if status == 0 and args.command in ("train", "eval"):  # every rank is done: leave together
            from advtrain.distributed import cleanup

            cleanup()
        return status
    except (AdvtrainError, AttackError) as e:
        if getattr(e, "every_rank", False) or _prints_errors():
            print(f"advtrain {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _SYSTEM_ERRNOS:
            raise
        print(f"advtrain {args.command}: error: {_os_message(e, args.command)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"advtrain {args.command}: interrupted", file=sys.stderr)
        return 130


#: errno values that mean "the file system refused", not "advtrain has a bug"
_SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                  errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}


def _prints_errors() -> bool:
    """Under torchrun only rank 0 prints a user error (every rank raises the same one), once; a
    launch environment that describes no process group is each process's own error: printed."""
    from advtrain.distributed import check_launch_env, launch_rank

    try:
        check_launch_env()
        return launch_rank() == 0
    except AdvtrainError:  # a malformed RANK: say so rather than nothing
        return True


def _os_message(e: OSError, command: str) -> str:
    """``<path>: <reason>; <fix>`` for a refused read/write."""
    where = f"{e.filename}: " if e.filename else ""
    reason = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space and run again (files written before are intact"
        fix += "; continue with advtrain train --resume RUN_DIR)" if command == "train" else ")"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a component of this path is a file, not a directory; choose another output path"
    elif e.errno == errno.EISDIR:
        fix = "a directory is where this file must be; move the directory away"
    elif e.errno == errno.ELOOP:
        fix = "a symbolic link here points back to itself; remove the link"
    else:
        fix = "the location is not writable; choose another output path"
    return f"{where}{reason}; {fix}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
