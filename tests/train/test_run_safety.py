"""Run directories and configs that the bad-input table cannot show in one line (issue #10):
one ``advtrain train`` per run directory (two real processes), resuming from the newest intact
checkpoint, strict YAML round trips, and a run directory left without a checkpoint being reused."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from advtrain import config as C
from advtrain.errors import CheckpointError, InputError
from trainer_helpers import tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A tiny run stopped after epoch 1 of 2 (epoch_1.pt, last.pt, config.yaml)."""
    from advtrain.train.loop import fit

    folder = tmp_path_factory.mktemp("run")
    return Path(fit(tiny_config(folder, data={"test_subset": 0}), stop_after=1))


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _env():
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ADVTRAIN_OFFLINE": "1"}
    env.pop("ADVTRAIN_DATA", None)
    return env


# ----------------------------------------------------------------------------- the lock
_HOLDER = textwrap.dedent("""
    import sys
    from advtrain.train.runlock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes stdin or kills this process
""")


def _resume(run: Path):
    return subprocess.run([sys.executable, "-m", "advtrain", "train", "--resume", str(run)],
                          capture_output=True, text=True, env=_env(), timeout=300)


def test_second_process_refused_while_first_holds_the_run(stopped_run, tmp_path):
    """Process A holds the run directory; a real ``advtrain train --resume`` (process B) is refused
    with one line naming A's PID and changes nothing; once A is killed (-9, as in a crash) the lock
    it left is not honoured and B resumes to the end."""
    run = _copy(stopped_run, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {p.name: _sha(p) for p in run.iterdir()}
        proc = _resume(run)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("advtrain ")]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert lines == [f"advtrain train: error: run directory {run} is in use by another "
                         f"'advtrain train' (pid {holder.pid}); wait for it to finish or stop it, "
                         "or choose another run.name / --run-dir"], proc.stderr
        assert {p.name: _sha(p) for p in run.iterdir()} == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert (run / "train.lock").read_text().strip() == str(holder.pid)  # left behind by the crash
    proc = _resume(run)
    assert proc.returncode == 0, proc.stderr
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_lock_is_released_when_fit_returns_or_fails(stopped_run, tmp_path):
    from advtrain.train.runlock import RunLock, holder
    from advtrain.train.loop import fit

    run = _copy(stopped_run, tmp_path / "run")
    with pytest.raises(InputError, match="optim.lr: 0.05 -> 0.1"):
        fit(C.load(run / "config.yaml", ["optim.lr=0.1"]), run_dir=str(run), resume=True)
    assert holder(str(run)) is None
    fit(None, run_dir=str(run), resume=True)
    assert holder(str(run)) is None
    RunLock(str(run)).acquire().release()  # free again


def test_new_run_into_held_directory_refused(tmp_path):
    """A fresh run whose directory another process holds (still in its first epoch: no
    checkpoint yet) is refused before anything is built."""
    from advtrain.train.runlock import RunLock
    from advtrain.train.loop import fit

    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    lock = RunLock(str(run)).acquire()
    try:
        with pytest.raises(InputError, match=rf"in use by another 'advtrain train' \(pid {os.getpid()}\)"):
            fit(tiny_config(tmp_path), run_dir=str(run))
    finally:
        lock.release()
    assert sorted(p.name for p in run.iterdir()) == ["train.lock"]


def test_run_dir_without_checkpoint_is_reused(tmp_path):
    """A run that stopped before its first checkpoint (e.g. diverged in epoch 1) leaves only
    config.yaml and train.lock; rerunning the same command trains instead of refusing."""
    from advtrain.train.loop import fit

    raw = tiny_config(tmp_path, optim={"epochs": 1}, data={"test_subset": 0})
    run = Path(raw["run"]["out_dir"]) / raw["run"]["name"]
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("left by a run that diverged\n")
    (run / "train.lock").write_text("999999\n")
    assert fit(raw) == str(run)
    assert torch.load(run / "epoch_1.pt", weights_only=True)["epoch"] == 1
    assert C.read_yaml(run / "config.yaml")["optim"]["epochs"] == 1


# ----------------------------------------------------------------------------- resume fallback
def test_resume_without_last_uses_newest_epoch_file(stopped_run, tmp_path, capsys):
    """last.pt missing, epoch_1.pt present: continue from epoch 1 (said on stderr) instead of
    starting over; epoch_1.pt is not rewritten."""
    from advtrain.train.loop import fit

    run = _copy(stopped_run, tmp_path / "run")
    (run / "last.pt").unlink()
    (run / "epoch_0.pt").write_bytes(b"not a checkpoint")  # lower epochs are never preferred
    epoch1 = _sha(run / "epoch_1.pt")
    fit(None, run_dir=str(run), resume=True)
    assert f"{run / 'last.pt'} is missing; resuming from {run / 'epoch_1.pt'} (epoch 1)" \
        in capsys.readouterr().err
    assert _sha(run / "epoch_1.pt") == epoch1
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and [r["epoch"] for r in last["history"]] == [1, 2]


def test_truncated_last_names_intact_fallback(stopped_run, tmp_path):
    """A last.pt that does not load is refused (it may hold steps no epoch file has); the message
    names the newest intact epoch file, skipping a corrupt higher one; moving last.pt away as the
    message says resumes from it."""
    from advtrain.train.checkpoint import resume_point
    from advtrain.train.loop import fit

    run = _copy(stopped_run, tmp_path / "run")
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    (run / "epoch_7.pt").write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(CheckpointError) as info:
        resume_point(str(run))
    message = str(info.value)
    assert message.startswith(f"cannot resume: {last}: truncated or corrupt checkpoint (")
    assert message.endswith(f"; the newest intact checkpoint is {run / 'epoch_1.pt'} (epoch 1): move "
                            f"{last} away (e.g. to last.pt.bad) and resume again to continue from it")
    assert "\n" not in message
    last.rename(run / "last.pt.bad")
    (run / "epoch_7.pt").unlink()
    fit(None, run_dir=str(run), resume=True)
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_truncated_last_without_fallback(stopped_run, tmp_path):
    from advtrain.train.checkpoint import resume_point

    run = _copy(stopped_run, tmp_path / "run")
    (run / "last.pt").write_bytes(b"")
    (run / "epoch_1.pt").unlink()
    with pytest.raises(CheckpointError, match="no intact epoch_N.pt to fall back on"):
        resume_point(str(run))


# ----------------------------------------------------------------------------- strict YAML
@pytest.mark.parametrize("text,match", [
    ("optim:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n", "duplicate key 'lr' on lines 2 and 4"),
    ("run: {name: a, name: b}\n", "duplicate key 'name' on line 1"),
    ("a: &x 1\nb: 2\n", "line 1: YAML anchor &x is not allowed"),
    ("base: {lr: 1}\noptim: *base\n", r"line 2: YAML alias \*base is not allowed"),
])
def test_strict_yaml(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        C.read_yaml(path)


def test_utf8_with_bom_and_non_ascii_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("\ufeffnotes: café 8/255\n".encode("utf-8"))
    assert C.read_yaml(path) == {"notes": "café 8/255"}


def test_dump_never_writes_aliases(tmp_path):
    """A resolved config whose lists share one object still dumps in full (safe_dump would write
    ``&id001`` / ``*id001``, which the strict loader refuses when the run is resumed)."""
    shared = [3, 5]
    text = C.dump({"optim": {"milestones": shared}, "average": {"milestones": shared}})
    assert "&" not in text and "*" not in text
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert C.read_yaml(path) == {"optim": {"milestones": [3, 5]}, "average": {"milestones": [3, 5]}}


@pytest.mark.parametrize("name", ["gkl_at_cifar10", "Cui2023Decoupled_WRN-34-10", "a.b+c", "9"])
def test_run_names_accepted(name):
    assert C.from_dict({"run": {"name": name}}).run.name == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", ".hidden", "a b", "x" * 129,
                                  "a\\b", "é"])
def test_run_names_refused(name):
    with pytest.raises(InputError, match="is not a valid run name"):
        C.from_dict({"run": {"name": name}})


def test_written_config_reloads_under_strict_loader(tmp_path):
    """Every shipped config dumps to YAML that the strict loader reads back unchanged."""
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        cfg = C.load(path)
        out = tmp_path / path.name
        out.write_text(C.dump(cfg))
        assert C.read_yaml(out) == yaml.safe_load(C.dump(cfg)), path
