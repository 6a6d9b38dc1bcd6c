"""``advtrain --version`` prints advtrain's and torch's versions and exits 0."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import advtrain

REPO = Path(__file__).resolve().parents[2]


def test_version_prints_versions_and_exits_0():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "advtrain", "--version"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith(f"advtrain {advtrain.__version__} ")
    assert f"torch {torch.__version__.split('+')[0]}" in out
    assert proc.stderr == ""
