"""Resume: an interrupted run (cleanly after an epoch, or SIGKILLed at random instants) ends with
bit-identical weights to an uninterrupted one, and only complete checkpoint files ever exist."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from advtrain.train import checkpoint as ck
from advtrain.train.loop import fit
from trainer_helpers import one_thread, states_equal, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _threads():
    with one_thread():
        yield


def _final(run_dir):
    return ck.load(os.path.join(run_dir, "last.pt"))


def _same_final_state(a, b):
    assert states_equal(a["model"], b["model"])
    assert states_equal(a["objective"], b["objective"])
    if "ema" in a or "ema" in b:
        assert states_equal(a["ema"], b["ema"])
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert set(oa) == set(ob)
    assert all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])


def _cfg(folder, **kw):
    return tiny_config(folder, objective={"name": "gkl_at", "alpha": 1.0, "beta": 1.0},
                       awp={"enabled": True, "warmup": 2}, ema={"enabled": True, "decay": 0.5},
                       data={"augment": "basic"}, **kw)


def test_resume_after_epoch_is_bit_identical(tmp_path):
    ref = fit(_cfg(tmp_path / "a"))
    part = fit(_cfg(tmp_path / "b"), stop_after=1)
    assert _final(part)["epoch"] == 1
    resumed = fit(None, run_dir=part, resume=True)
    _same_final_state(_final(ref), _final(resumed))


def test_resume_mid_epoch_from_step_checkpoint(tmp_path):
    """A last.pt written after step 1 of epoch 2 (of 2 steps) resumes to the same weights."""
    ref = _final(fit(_cfg(tmp_path / "a", run={"checkpoint_every_steps": 1})))
    run_b = fit(_cfg(tmp_path / "b", run={"checkpoint_every_steps": 1}), stop_after=1)
    # simulate a crash right after step 3 (epoch 2, batch 1): rerun epoch 2 up to that save
    import advtrain.train.loop as T

    original = T.Trainer._save

    def crash_after_mid_save(self, epoch_file):
        original(self, epoch_file)
        if not epoch_file and self.progress.batch == 1:
            raise KeyboardInterrupt

    T.Trainer._save = crash_after_mid_save
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(None, run_dir=run_b, resume=True)
    finally:
        T.Trainer._save = original
    mid = _final(run_b)
    assert (mid["epoch"], mid["batch"], mid["step"]) == (1, 1, 3) and "epoch_rng" in mid
    _same_final_state(ref, _final(fit(None, run_dir=run_b, resume=True)))


def _write_yaml(folder, raw):
    path = os.path.join(folder, "cfg.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


def _complete_files(run_dir):
    """Every *.pt in the run dir is a complete, loadable checkpoint."""
    for name in os.listdir(run_dir):
        if name.endswith(".pt"):
            ck.load(os.path.join(run_dir, name))


@pytest.mark.slow
def test_sigkill_at_random_points_resumes_bit_identically(tmp_path):
    raw = _cfg(tmp_path, run={"checkpoint_every_steps": 1}, optim={"epochs": 2})
    ref = _final(fit(raw, run_dir=str(tmp_path / "ref")))
    path = _write_yaml(tmp_path, raw)
    run_dir = str(tmp_path / "killed")
    threads = str(torch.get_num_threads())  # as the reference run: bit identity needs the same reductions
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONWARNINGS="ignore")
    rnd = random.Random(1)
    kills = 0
    for attempt in range(12):
        args = ["-m", "advtrain", "train"] + (
            [path, "--run-dir", run_dir] if attempt == 0 else ["--resume", run_dir])
        proc = subprocess.Popen([sys.executable] + args, cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < 2:
            last = os.path.join(run_dir, "last.pt")
            seen = os.path.getmtime(last) if os.path.exists(last) else None
            while proc.poll() is None:  # wait for one new checkpoint, then kill at a random instant
                now = os.path.getmtime(last) if os.path.exists(last) else None
                if now != seen:
                    time.sleep(rnd.uniform(0.0, 0.6))
                    break
                time.sleep(0.02)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        _, err = proc.communicate(timeout=300)
        _complete_files(run_dir)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert proc.returncode == 0 and kills >= 1
    assert not [n for n in os.listdir(run_dir) if n.endswith(".tmp")]  # stale temp files cleaned
    _same_final_state(ref, _final(run_dir))
