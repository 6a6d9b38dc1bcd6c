"""Issue 16.4/16.5 through the command line: every writer on a real full disk (a small tmpfs) prints
one line naming the folder and the space needed and leaves every earlier file as it was; a SIGTERM
between the files of a several-file output (card + sidecar, epoch file + last.pt) leaves a state the
rerun completes without ``--overwrite``.

The tmpfs needs root; where mounting is refused the full-disk tests skip (``tests/io/test_safeload_atomic.py`` covers
the writer itself by fault injection).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: shared helpers
from helpers import make_npz, snapshot, temp_files, tiny_checkpoint  # noqa: E402
from trainer_helpers import one_thread, tiny_config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A tiny 2-epoch run stopped after epoch 1 (last.pt, epoch_1.pt, metrics, config)."""
    from advtrain.train.loop import fit

    root = tmp_path_factory.mktemp("run")
    with one_thread():
        return Path(fit(tiny_config(str(root)), run_dir=str(root / "run"), stop_after=1))


@pytest.fixture
def small_fs(tmp_path):
    """A real tmpfs of 4 MiB; ``fill(mnt, leave)`` then takes all but ``leave`` bytes of it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?); tests/io/test_safeload_atomic.py injects the fault")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def fill(mnt: Path, leave: int) -> Path:
    """A filler file taking all but about ``leave`` bytes of ``mnt``'s free space."""
    filler = mnt / "filler"
    filler.write_bytes(bytes(max(shutil.disk_usage(mnt).free - leave, 0)))
    return filler


def cli(argv) -> tuple:
    """``(exit status, stderr)`` of ``advtrain ARGV`` run in-process."""
    from advtrain.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), one_thread():
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


def assert_full_disk_line(rc: int, err: str, folder: Path, writing: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("advtrain ")]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].split(": error: ")[1].startswith(f"{folder}: No space left on device"), lines[0]
    assert re.search(rf"writing {re.escape(writing)} needs about [0-9.]+ [KM]iB, [0-9.]+ [KM]iB "
                     "free in this folder", lines[0]), lines[0]


def test_train_onto_a_full_disk_keeps_the_previous_last_pt(stopped_run, small_fs):
    run = small_fs / "run"
    shutil.copytree(stopped_run, run)
    before = snapshot(run)
    filler = fill(small_fs, leave=64 * 1024)  # a checkpoint of this run is ~650 KB
    rc, err = cli(["train", "--resume", run])
    assert_full_disk_line(rc, err, run, "epoch_2.pt")
    assert "advtrain train --resume RUN_DIR" in err
    after = snapshot(run)
    assert {k: after[k] for k in before} == before  # last.pt, epoch_1.pt, metrics: as they were
    assert set(after) <= set(before) | {"train.lock"} and temp_files(run) == []
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    filler.unlink()  # space freed: the same command finishes the run
    rc, err = cli(["train", "--resume", run])
    assert rc == 0, err
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_average_onto_a_full_disk_then_rerun(stopped_run, small_fs):
    run = small_fs / "run"
    shutil.copytree(stopped_run, run)
    before = snapshot(run)
    filler = fill(small_fs, leave=32 * 1024)
    rc, err = cli(["average", run, "--end", "1"])
    assert_full_disk_line(rc, err, run, "average_tau0.9_1_1.pt")
    assert snapshot(run) == before and temp_files(run) == []
    filler.unlink()
    rc, err = cli(["average", run, "--end", "1"])
    assert rc == 0, err
    avg = torch.load(run / "average_tau0.9_1_1.pt", weights_only=True)
    one = torch.load(run / "epoch_1.pt", weights_only=True)["model"]  # one epoch: its own weights
    assert all(torch.equal(avg["model"][k], v) for k, v in one.items())


def _eval_argv(ckpt, npz, out, *extra):
    return ["eval", ckpt, "--dataset", "cifar10", "--data-npz", npz, "--n-ex", "8", "--version",
            "custom", "--attacks", "apgd-ce", "--n-iter", "1", "--batch-size", "8", "--no-sanity",
            "--quiet", "--device", "cpu", "--out", out, "--name", "Me2026Tiny", *extra]


def test_card_onto_a_full_disk_then_rerun_without_overwrite(tmp_path, small_fs):
    ckpt, npz = tiny_checkpoint(tmp_path / "c.pt"), make_npz(tmp_path / "t.npz")
    out = small_fs / "cards"
    folder = out / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    (folder / "Earlier.json").write_text('{"name": "Earlier"}\n')
    filler = fill(small_fs, leave=0)
    rc, err = cli(_eval_argv(ckpt, npz, out))
    assert_full_disk_line(rc, err, folder, "Me2026Tiny.advtrain.json")
    assert sorted(p.name for p in folder.iterdir()) == ["Earlier.json"]  # no card, no sidecar
    filler.unlink()
    rc, err = cli(_eval_argv(ckpt, npz, out))  # no --overwrite: nothing of it was written
    assert rc == 0, err
    assert json.loads((folder / "Me2026Tiny.json").read_text())["dataset"] == "cifar10"
    assert (folder / "Earlier.json").read_text() == '{"name": "Earlier"}\n'


def test_autoattack_state_onto_a_full_disk(tmp_path, small_fs):
    ckpt, npz = tiny_checkpoint(tmp_path / "c.pt"), make_npz(tmp_path / "t.npz")
    (small_fs / "earlier.pt").write_bytes(b"an earlier file")
    fill(small_fs, leave=0)
    state = small_fs / "aa_state.pt"
    rc, err = cli(_eval_argv(ckpt, npz, tmp_path / "cards", "--state-path", state))
    assert_full_disk_line(rc, err, small_fs, "aa_state.pt")
    assert (small_fs / "earlier.pt").read_bytes() == b"an earlier file"
    assert not state.exists() and temp_files(small_fs) == []
    assert not (tmp_path / "cards").exists()  # no card for an evaluation that did not finish


# ----------------------------------------------------------------------------- SIGTERM between files
def _killed_after(rename_of: str, argv) -> subprocess.CompletedProcess:
    """``advtrain ARGV`` in a real subprocess that SIGTERMs itself right after the atomic writer
    renames a file whose name ends with ``rename_of`` into place."""
    code = f"""
import os, signal, sys
import advtrain.io.atomic as atomic
real = os.replace
def replace(src, dst):
    real(src, dst)
    if str(dst).endswith({rename_of!r}):
        os.kill(os.getpid(), signal.SIGTERM)
atomic.os.replace = replace
from advtrain.cli import main
sys.exit(main({[str(a) for a in argv]!r}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env)


def test_sigterm_between_sidecar_and_card_then_rerun_without_overwrite(tmp_path):
    ckpt, npz = tiny_checkpoint(tmp_path / "c.pt"), make_npz(tmp_path / "t.npz")
    out = tmp_path / "cards"
    killed = _killed_after(".advtrain.json", _eval_argv(ckpt, npz, out))
    assert killed.returncode == -signal.SIGTERM, killed.stderr
    folder = out / "cifar10" / "Linf"
    left = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".tmp"))
    assert left == ["Me2026Tiny.advtrain.json"]  # no card (its temporary: removed by the rerun)
    rc, err = cli(_eval_argv(ckpt, npz, out))  # the lone sidecar reads as "no card yet"
    assert rc == 0, err
    side = json.loads((folder / "Me2026Tiny.advtrain.json").read_text())
    card = json.loads((folder / "Me2026Tiny.json").read_text())
    assert side["clean_acc"] * 100 == pytest.approx(float(card["clean_acc"]), abs=0.01)
    assert temp_files(out) == []


def test_sigterm_between_epoch_file_and_last_pt_resumes_to_the_same_weights(stopped_run, tmp_path):
    """epoch_2.pt in place, last.pt still epoch 1: the resume repeats epoch 2 and ends with the
    weights of an uninterrupted resume (bit for bit)."""
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    shutil.copytree(stopped_run, cut)
    shutil.copytree(stopped_run, whole)
    killed = _killed_after("epoch_2.pt", ["train", "--resume", cut])
    assert killed.returncode == -signal.SIGTERM, killed.stderr
    assert torch.load(cut / "last.pt", weights_only=True)["epoch"] == 1
    assert (cut / "epoch_2.pt").is_file()
    for run in (cut, whole):
        rc, err = cli(["train", "--resume", run])
        assert rc == 0, err
    a = torch.load(cut / "last.pt", weights_only=True)
    b = torch.load(whole / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], v) for k, v in b["model"].items())
    rows = [(run / "metrics.csv").read_text().splitlines() for run in (cut, whole)]
    assert len(rows[0]) == len(rows[1]) == 3  # header, epoch 1, epoch 2 (once, not twice)
    assert temp_files(cut) == []


# ----------------------------------------------------------------------------- read-only folders
@pytest.fixture
def read_only(small_fs, stopped_run):
    """The small tmpfs holding a copy of the stopped run, then remounted read-only (root cannot
    write there either, unlike a chmod'ed folder)."""
    shutil.copytree(stopped_run, small_fs / "run")
    if subprocess.run(["mount", "-o", "remount,ro", str(small_fs)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot remount the tmpfs read-only here")
    return small_fs


@pytest.mark.parametrize("command", ["train-resume", "train-new", "average", "eval", "export"])
def test_a_read_only_output_folder_is_one_line_and_changes_nothing(read_only, tmp_path, command):
    run = read_only / "run"
    before = snapshot(read_only)
    ckpt, npz = tiny_checkpoint(tmp_path / "c.pt"), make_npz(tmp_path / "t.npz")
    config = tmp_path / "config.yaml"
    config.write_text((run / "config.yaml").read_text())
    argv = {"train-resume": ["train", "--resume", run],
            "train-new": ["train", config, "--run-dir", read_only / "new"],
            "average": ["average", run, "--end", "1"],
            "eval": _eval_argv(ckpt, npz, read_only / "cards"),
            "export": ["export", ckpt, "--name", "Me2026Tiny_WRN-10-1", "--dataset", "cifar10",
                       "--model-dir", read_only / "md"]}[command]
    rc, err = cli(argv)
    lines = [ln for ln in err.splitlines() if ln.startswith("advtrain ")]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert "Read-only file system" in lines[0] and str(read_only) in lines[0], lines[0]
    assert snapshot(read_only) == before


# ----------------------------------------------------------------------------- the --eps-sweep files
def test_sweep_files_and_card_are_one_output(tmp_path, small_fs):
    """CSV, two PNGs and their SVGs, sidecar and card: a full disk leaves none of them, a SIGTERM
    after the CSV leaves no card, and the rerun (no --overwrite) writes all seven."""
    ckpt, npz = tiny_checkpoint(tmp_path / "c.pt"), make_npz(tmp_path / "t.npz")
    sweep = ("--eps-sweep", "0,8/255", "--sweep-steps", "1", "--sweep-restarts", "1")
    out = small_fs / "cards"
    filler = fill(small_fs, leave=4096)  # less than the two PNGs need
    rc, err = cli(_eval_argv(ckpt, npz, out, *sweep))
    folder = out / "cifar10" / "Linf"
    lines = [ln for ln in err.splitlines() if ln.startswith("advtrain ")]
    assert rc == 1 and len(lines) == 1 and "No space left on device" in lines[0], err
    assert [p for p in folder.iterdir()] == [] and temp_files(small_fs) == []
    filler.unlink()
    killed = _killed_after(".eps_sweep.csv", _eval_argv(ckpt, npz, out, *sweep))
    assert killed.returncode == -signal.SIGTERM, killed.stderr
    assert not (folder / "Me2026Tiny.json").exists()
    rc, err = cli(_eval_argv(ckpt, npz, out, *sweep))
    assert rc == 0, err
    assert sorted(p.name for p in folder.iterdir()) == [
        "Me2026Tiny.advtrain.json", "Me2026Tiny.convergence.png", "Me2026Tiny.convergence.svg",
        "Me2026Tiny.eps_sweep.csv", "Me2026Tiny.eps_sweep.png", "Me2026Tiny.eps_sweep.svg",
        "Me2026Tiny.json"]
    side = json.loads((folder / "Me2026Tiny.advtrain.json").read_text())
    assert side["eps_sweep"]["files"]["csv"] == "Me2026Tiny.eps_sweep.csv"


def test_a_refused_card_leaves_no_sweep_files(tmp_path):
    """Logits that overflow block the card; the sweep's CSV and PNGs belong to it and are not
    written either (before, they were written first and stayed without a card)."""
    ck = torch.load(tiny_checkpoint(tmp_path / "c.pt"), weights_only=True)
    ck["model"]["fc.weight"].fill_(3e38)  # finite weights, logits overflow to Inf
    torch.save(ck, tmp_path / "huge.pt")
    npz, out = make_npz(tmp_path / "t.npz"), tmp_path / "cards"
    rc, err = cli(_eval_argv(tmp_path / "huge.pt", npz, out, "--eps-sweep", "0,8/255",
                             "--sweep-steps", "1", "--sweep-restarts", "1"))
    assert rc == 2 and "card not written: [non-finite-logits]" in err, err
    assert not out.exists() or list(out.rglob("*.*")) == []
