"""``advtrain report DIR [--out PREFIX]``: every RobustBench card under DIR as one table.

Writes ``PREFIX.md`` (sorted by robust accuracy) and ``PREFIX.html`` (self-contained: click a header
to sort, the ``--eps-sweep`` curves embedded); PREFIX defaults to ``DIR/report``. Partial
evaluations (not standard AutoAttack on the full test set) are marked. See advtrain/eval/report.py.
"""
from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="one table (Markdown + HTML) of the cards in a folder",
                              description=__doc__.splitlines()[0])
    p.add_argument("dir", help="folder of cards in the model_info layout, searched recursively")
    p.add_argument("--out", metavar="PREFIX",
                   help="write PREFIX.md and PREFIX.html (default DIR/report)")
    p.set_defaults(func=run)


def run(args) -> int:
    from advtrain.eval.report import report_files, report_inputs, write_report
    from advtrain.io.paths import check_outputs, check_path, check_writable_dir

    check_path(args.dir, "DIR")
    check_path(args.out, "--out")
    if args.out is not None:
        from pathlib import Path

        check_writable_dir(Path(args.out).resolve().parent)
    md, page = report_files(args.dir, args.out)  # the one output-path check, before any work
    check_outputs({"the report's .md": md, "the report's .html": page}, report_inputs(args.dir))
    md, page, rows = write_report(args.dir, args.out)
    partial = sum(bool(r["partial"]) for r in rows)
    print(f"{len(rows)} cards ({partial} partial)\nmarkdown: {md}\nhtml: {page}")
    return 0
