"""Untrusted files are never unpickled, at any entry point (issue #6 item 1).

Every file below carries a :class:`helpers.Payload` whose unpickling would create a marker file.
Each CLI entry point is run on it as a real subprocess (``python -m advtrain ...``), all started at
once to share the import time; each must refuse with one ``advtrain <cmd>: error:`` line, no traceback,
a non-zero exit, and the marker must not exist. A positive control shows that the payload really does
create the marker when a file is unpickled (so the refusals are not vacuous).
"""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import (make_npz, tiny_checkpoint, write_config, write_pickle_bomb,
                     write_pickle_npz)

REPO = Path(__file__).resolve().parents[2]
ZOO_NAME = "Carmon2019Unlabeled"  # any RobustBench cifar10/Linf id: its file is what is tested


def _cases(tmp: Path) -> dict:
    """{case: (argv, marker)}: one crafted file per CLI entry point."""
    data = make_npz(tmp / "test.npz")
    good = tiny_checkpoint(tmp / "good.pt")
    cases = {}

    def marker(name):
        return tmp / f"marker_{name}"

    evil = write_pickle_bomb(tmp / "evil.pt", marker("eval"))
    cases["eval"] = (["eval", str(evil), "--dataset", "cifar10", "--data-npz", str(data),
                      "--n-ex", "8", "--out", str(tmp / "cards")], marker("eval"))
    evil = write_pickle_bomb(tmp / "evil_export.pt", marker("export"),
                             wrap=lambda p: {"model": {"w": torch.zeros(1)}, "arch": p})
    cases["export"] = (["export", str(evil), "--name", "X", "--dataset", "cifar10",
                        "--model-dir", str(tmp / "zoo_out"), "--arch", "wrn-10-1"], marker("export"))
    run = tmp / "run"
    run.mkdir()
    shutil.copy(write_config(tmp), run / "config.yaml")
    write_pickle_bomb(run / "last.pt", marker("resume"))
    cases["train --resume"] = (["train", "--resume", str(run)], marker("resume"))
    avg = tmp / "avg_run"
    avg.mkdir()
    for e in (1, 2):
        write_pickle_bomb(avg / f"epoch_{e}.pt", marker("average"))
    cases["average"] = (["average", str(avg)], marker("average"))
    zoo = tmp / "zoo"
    write_pickle_bomb(zoo / "cifar10" / "Linf" / f"{ZOO_NAME}.pt", marker("zoo"),
                      wrap=lambda p: {"state_dict": {"w": torch.zeros(1)}, "x": p})
    cases["eval --robustbench-name"] = (
        ["eval", "--robustbench-name", ZOO_NAME, "--model-dir", str(zoo), "--dataset", "cifar10",
         "--data-npz", str(data), "--n-ex", "8", "--out", str(tmp / "cards")], marker("zoo"))
    teacher = tmp / "teacher"  # a RobustBench-form teacher: the same loader, not robustbench's
    teacher.mkdir()
    write_pickle_bomb(teacher / "cifar10" / "Linf" / f"{ZOO_NAME}.pt", marker("teacher"),
                      wrap=lambda p: {"state_dict": {"w": torch.zeros(1)}, "x": p})
    cfg = write_config(teacher, objective={"name": "ard"},
                       teacher={"robustbench": ZOO_NAME, "model_dir": str(teacher)})
    cases["train (teacher.robustbench)"] = (["train", str(cfg)], marker("teacher"))
    evil_npz = write_pickle_npz(tmp / "evil.npz", marker("npz"))
    cases["eval --data-npz"] = (["eval", str(good), "--dataset", "cifar10", "--data-npz",
                                 str(evil_npz), "--n-ex", "8", "--out", str(tmp / "cards")],
                                marker("npz"))
    return cases


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Run every case as a subprocess, all at once; {case: (returncode, stderr, marker)}."""
    tmp = tmp_path_factory.mktemp("untrusted")
    env = {**os.environ, "ADVTRAIN_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("ADVTRAIN_DATA", None)
    procs = {}
    for name, (argv, marker) in _cases(tmp).items():
        procs[name] = (subprocess.Popen([sys.executable, "-m", "advtrain", *argv], cwd=tmp,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True), marker)
    out = {}
    for name, (proc, marker) in procs.items():
        _, err = proc.communicate(timeout=300)
        out[name] = (proc.returncode, err, marker)
    return out


CASES = ["eval", "export", "train --resume", "average", "eval --robustbench-name",
         "eval --data-npz", "train (teacher.robustbench)"]


@pytest.mark.parametrize("case", CASES)
def test_entry_point_refuses_pickled_file(refusals, case):
    rc, err, marker = refusals[case]
    command = case.split()[0]
    lines = [ln for ln in err.splitlines() if ln.startswith("advtrain ")]
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"advtrain {command}: error: "), err
    assert "pickle" in lines[0] and "refuse" in lines[0], lines[0]
    assert not marker.exists(), f"{case}: the payload ran"


def test_payload_is_live(tmp_path):
    """Control: unpickling the crafted files does create the marker (what the CLI must not do)."""
    marker = tmp_path / "m1"
    path = write_pickle_bomb(tmp_path / "bomb.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker2 = tmp_path / "m2"
    with np.load(write_pickle_npz(tmp_path / "bomb.npz", marker2), allow_pickle=True) as z:
        z["image"]
    assert marker2.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw-pickle"])
def test_load_state_file_refuses_every_serialization(tmp_path, fmt):
    """torch zip format, torch's legacy format and a bare pickle are all refused before running."""
    from advtrain.errors import CheckpointError
    from advtrain.io.safeload import load_state_file
    from helpers import Payload

    marker = tmp_path / "marker"
    path = tmp_path / "ckpt.pt"
    obj = {"w": torch.zeros(2), "evil": Payload(marker)}
    if fmt == "raw-pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    with pytest.raises(CheckpointError, match="refused|corrupt"):
        load_state_file(path)
    assert not marker.exists()


def test_export_safetensors_loads(tmp_path, capsys):
    """``advtrain export --safetensors`` writes a file safetensors reads, equal to the .pt export,
    and that file is itself accepted as an input checkpoint."""
    from safetensors.torch import load_file

    from advtrain.cli import main

    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    rc = main(["export", str(ckpt), "--name", "Tiny_WRN-10-1", "--dataset", "cifar10",
               "--model-dir", str(tmp_path / "zoo"), "--safetensors"])
    assert rc == 0, capsys.readouterr().err
    pt = tmp_path / "zoo" / "cifar10" / "Linf" / "Tiny_WRN-10-1.pt"
    st = load_file(str(pt.with_suffix(".safetensors")))
    ref = torch.load(ckpt, weights_only=True)["model"]
    assert set(st) == set(ref) and all(torch.equal(st[k], ref[k]) for k in ref)
    rc = main(["export", str(pt.with_suffix(".safetensors")), "--name", "Again", "--dataset",
               "cifar10", "--model-dir", str(tmp_path / "zoo"), "--arch", "wrn-10-1"])
    assert rc == 0, capsys.readouterr().err
    again = torch.load(pt.with_name("Again.pt"), weights_only=True)
    assert all(torch.equal(again[k], ref[k]) for k in ref)
