"""sh/setup.sh is quiet when it works and shows pip's output when a step fails (issue 19.5).

A fake venv whose ``bin/python`` prints a line per call and fails on demand stands in for pip."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE = """#!/bin/bash
echo "pip says: $*"
if [ -n "$FAIL_ON" ] && [[ "$*" == *"$FAIL_ON"* ]]; then echo "ERROR: no such package"; exit 1; fi
"""


@pytest.mark.parametrize("fail_on", ["", "-e"])
def test_setup_quiet_unless_a_step_fails(tmp_path, fail_on):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(FAKE)
    (venv / "bin" / "python").chmod(0o755)
    env = {**os.environ, "ADVTRAIN_VENV": str(venv), "FAIL_ON": fail_on}
    proc = subprocess.run(["bash", str(REPO / "sh" / "setup.sh")], capture_output=True, text=True,
                          env=env, timeout=60)
    out = proc.stdout + proc.stderr
    if not fail_on:
        assert proc.returncode == 0 and "pip says" not in out
        assert "1-2 minutes" in out and "[setup] ready" in out
        assert (venv / ".advtrain-setup").is_file()
    else:
        assert proc.returncode == 1 and "ERROR: no such package" in proc.stderr
        assert "pip install -e .[dev]" in proc.stderr and "advtrain-setup.log" in proc.stderr
        assert not (venv / ".advtrain-setup").exists()  # the next run tries again
