"""sh/train_config.sh wiring, with a stand-in ``advtrain`` on PATH that records its arguments."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAKE = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [ "$1" = average ]; then echo "advtrain average: wrote runs/r/average_tau0.9_1_9.pt"; fi
"""


def _run(tmp_path, config, dataset, weights, env=None):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "sh", root / "sh")
    shutil.copytree(REPO / "configs", root / "configs")
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "advtrain"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    full = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CALLS": str(calls),
            **(env or {})}
    if "EVAL_EPS" not in (env or {}):
        full.pop("EVAL_EPS", None)
    subprocess.run(["bash", "sh/train_config.sh", f"configs/{config}.yaml", dataset, weights],
                   cwd=root, env=full, check=True, capture_output=True, text=True)
    return calls.read_text().splitlines()


def test_two_experiments_evaluating_last_pt_get_their_own_cards(tmp_path):
    """Every run's checkpoint is called last.pt: the card is named after the experiment instead."""
    a = _run(tmp_path / "a", "lbgat0_cifar100", "cifar100", "last", {"EVAL_EPS": "0.031"})
    b = _run(tmp_path / "b", "lbgat6_cifar100", "cifar100", "last")
    assert a[0].startswith("train configs/lbgat0_cifar100.yaml --run-dir runs/lbgat0_cifar100")
    assert a[1].startswith("eval runs/lbgat0_cifar100/last.pt ")
    assert "--name lbgat0_cifar100 --overwrite" in a[1] and a[1].endswith("--eps 0.031")
    assert "--name lbgat6_cifar100 --overwrite" in b[1] and "0.031" not in b[1]


def test_average_mode_evaluates_the_file_average_wrote(tmp_path):
    calls = _run(tmp_path, "gkl_at_cifar10", "cifar10", "average")
    assert calls[1] == "average runs/gkl_at_cifar10"
    assert calls[2].startswith("eval runs/r/average_tau0.9_1_9.pt --dataset cifar10 ")
    assert "--name gkl_at_cifar10" in calls[2]
