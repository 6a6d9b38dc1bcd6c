"""Every numeric option of ``advtrain eval`` has a range (issue 23.6): a value outside it is one
line from the parser, exit 2, before any file is read (the checkpoint here does not even exist)."""
from __future__ import annotations

import pytest

from advtrain.cli import main

NUMERIC = ["--n-ex", "--subset-seed", "--batch-size", "--seed", "--pgd-steps", "--sanity-n",
           "--sanity-steps", "--guard-n", "--n-iter", "--n-restarts", "--n-queries", "--n-targets",
           "--sweep-steps", "--sweep-restarts"]


def test_the_list_is_every_numeric_eval_option():
    from advtrain.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["eval"]
    numeric = {a.option_strings[0] for a in sub._actions
               if a.option_strings and getattr(a.type, "__name__", "") in ("int", "float", "integer")}
    assert numeric == set(NUMERIC)
    assert not [a for a in sub._actions if a.type in (int, float)]  # none without a range


@pytest.mark.parametrize("flag", NUMERIC)
@pytest.mark.parametrize("value", [str(2 ** 64), str(10 ** 30), "-1", "1.5", "nan"])
def test_out_of_range_is_one_line(tmp_path, capsys, flag, value):
    rc = main(["eval", str(tmp_path / "absent.pt"), "--dataset", "cifar10", flag, value])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"argument {flag}: {value[:30]}" in err and "is not an integer in [" in err, err
