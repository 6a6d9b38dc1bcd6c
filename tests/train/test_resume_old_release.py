"""A run directory written by the release before the package move (the code of commit
``OLD_RELEASE``, taken from this clone's own history) resumes under today's code and ends
bit-identical to a run trained by today's code without interruption."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from advtrain.train import checkpoint as ck
from advtrain.train.loop import fit
from trainer_helpers import one_thread, states_equal

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
#: the last release in the flat layout (advtrain/trainer.py, advtrain/checkpoint.py, ...)
OLD_RELEASE = "a522f069519dc4e7d1fa34ace2ccd6089bdbc75c"


def _old_code(dest: Path) -> Path:
    """advtrain/, attacks/ and autoattack/ of OLD_RELEASE unpacked under ``dest``; skipped only
    outside a git checkout or in a shallow clone (a full clone must have the commit)."""
    git = ["git", "-C", str(REPO)]
    try:
        shallow = subprocess.run(git + ["rev-parse", "--is-shallow-repository"], capture_output=True,
                                 text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the old release's code comes from its history")
    if shallow == "true":
        pytest.skip("shallow clone: the old release's code is not in its history")
    blob = subprocess.run(git + ["archive", "--format=tar", OLD_RELEASE, "advtrain", "attacks", "autoattack"],
                          capture_output=True, check=True).stdout
    dest.mkdir()
    tar = dest / "old.tar"
    tar.write_bytes(blob)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return dest


def test_old_layout_assumption_holds(tmp_path):
    """The release really is the old layout (otherwise the test below proves nothing)."""
    code = _old_code(tmp_path / "old")
    assert (code / "advtrain" / "trainer.py").is_file() and not (code / "advtrain" / "train").exists()


def test_run_of_the_old_release_resumes_bit_identically(tmp_path):
    code = _old_code(tmp_path / "old")
    env = {**os.environ, "PYTHONPATH": str(code), "ADVTRAIN_TEST_THREADS": "1"}
    out = subprocess.run([sys.executable, str(HERE / "old_release_run.py"), str(tmp_path / "b")],
                         env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    part = out.stdout.strip().splitlines()[-1]
    assert ck.load(os.path.join(part, "last.pt"))["epoch"] == 1

    sys.path.insert(0, str(HERE))
    from old_release_run import config

    with one_thread():
        torch.manual_seed(0)
        ref = fit(config(tmp_path / "a"))
        resumed = fit(None, run_dir=part, resume=True)
    a, b = ck.load(os.path.join(ref, "last.pt")), ck.load(os.path.join(resumed, "last.pt"))
    for key in ("model", "objective", "ema"):
        assert states_equal(a[key], b[key]), key
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, b["step"])
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
