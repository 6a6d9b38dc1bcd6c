"""Issue 24.6: what the terminal shows. With stderr not a terminal (a log file, CI) no progress bar
is drawn and each epoch is one line; eval prints eps as the card does; the compressed-npz notice
comes once per run; every option has help text without reST markup; train --help says where the
config keys are documented; a run without a per-epoch test prints no table of None; the summary
names the thread count the run's determinism holds for."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from trainer_helpers import one_thread, tiny_config  # noqa: E402

from advtrain.cli import build_parser, main  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_only_on_a_terminal(monkeypatch):
    from advtrain.utils import show_progress

    monkeypatch.setattr(sys, "stderr", _Stream(True))
    assert show_progress(True) is True and show_progress(False) is False
    monkeypatch.setattr(sys, "stderr", _Stream(False))
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert show_progress(True) is False


def test_non_tty_run_has_no_bar_one_line_per_epoch_and_no_none_table(tmp_path):
    """A real run with stdout and stderr in a file: no carriage returns, two epoch lines,
    data.test_subset: 0 gives a sentence instead of a table of None, the thread count is printed."""
    cfg = tiny_config(tmp_path, run={"progress": True}, data={"test_subset": 0})
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    log = tmp_path / "log.txt"
    code = ("import json,sys,torch; torch.set_num_threads(1); from advtrain.train.loop import fit; "
            f"fit(json.load(open({str(tmp_path / 'c.json')!r})))")
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-c", code], stdout=fh, stderr=subprocess.STDOUT,
                              cwd=REPO, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "\r" not in text
    epoch_lines = [ln for ln in text.splitlines() if ln.lstrip().startswith("epoch ")]
    assert len(epoch_lines) == 2, text
    assert "None" not in text and "no per-epoch test (data.test_subset: 0" in text
    assert "threads: 1 intra-op" in text
    run = next((tmp_path / "runs").iterdir())
    assert "threads: 1 intra-op" in (run / "summary.txt").read_text()


def test_summary_table_when_tested():
    from advtrain.train.metrics import summary_text

    rows = [{"epoch": 1, "test_clean": 0.5, "test_pgd": 0.25}]
    text = summary_text(rows, None, "test subset of 8 images")
    assert "50.0" in text and "25.0" in text and "None" not in text


def _help_texts(parser):
    import argparse

    yield "advtrain", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub


def test_every_option_has_help_without_rest_markup():
    for name, parser in _help_texts(build_parser()):
        for action in parser._actions:
            if action.option_strings and action.help is None:
                pytest.fail(f"advtrain {name} {action.option_strings[0]} has no help text")
        text = parser.format_help()
        assert "`" not in text and ":func:" not in text, (name, text)


def test_train_help_says_where_config_keys_are(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "docs/CONFIG.md" in out and (REPO / "docs" / "CONFIG.md").is_file()


def test_eval_prints_eps_as_the_card_and_one_compressed_notice(tmp_path, capsys):
    from advtrain.models import create_model

    torch.manual_seed(0)
    torch.save(create_model("wrn-10-1", dataset="cifar10").state_dict(), tmp_path / "m.pt")
    rng = np.random.default_rng(0)
    np.savez_compressed(tmp_path / "t.npz", image=rng.integers(0, 256, (8, 32, 32, 3),
                                                               dtype=np.uint8),
                        label=np.arange(8) % 10)
    with one_thread():
        rc = main(["eval", str(tmp_path / "m.pt"), "--arch", "wrn-10-1", "--dataset", "cifar10",
                   "--data-npz", str(tmp_path / "t.npz"), "--n-ex", "8", "--version", "custom",
                   "--attacks", "apgd-ce", "--n-iter", "1", "--no-sanity",
                   "--out", str(tmp_path / "mi")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "(AutoAttack custom, Linf eps 8/255, n=8)" in captured.out
    assert captured.err.count("is compressed") == 1, captured.err
    assert "\r" not in captured.err  # no --quiet, but stderr is not a terminal: no bar


def test_compressed_notice_once_per_file_per_run(tmp_path, capsys):
    from advtrain.data import npz

    rng = np.random.default_rng(0)
    np.savez_compressed(tmp_path / "c.npz", image=rng.integers(0, 256, (4, 32, 32, 3),
                                                               dtype=np.uint8),
                        label=np.arange(4))
    for _ in range(3):  # e.g. the source check, the test split and the held-out split
        npz.read_npz(str(tmp_path / "c.npz"), cache_dir="")
    assert capsys.readouterr().err.count("c.npz is compressed") == 1
