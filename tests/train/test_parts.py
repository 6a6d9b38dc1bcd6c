"""Parts own their state: checkpoint layout, old-layout resume, a run that trained nothing, bf16 over
the whole AWP step, the TF32/cudnn policy, averaging file names."""
from __future__ import annotations

import functools
import os
import shutil

import pytest
import torch
import yaml

from advtrain.train import checkpoint as ck
from advtrain import config as C
from advtrain.train.loop import Trainer, fit
from trainer_helpers import one_thread, states_equal, tiny_config

#: the key names of a training checkpoint as the first release wrote them (written out by hand)
OLD_KEYS = ("model", "ema", "ema_updates", "arch", "dataset", "num_classes", "config", "optimizer",
            "objective", "epoch", "batch", "step", "rng", "running", "history", "best", "versions",
            "git_commit")


@pytest.fixture(autouse=True)
def _threads():
    with one_thread():
        yield


def _raw(tmp_path, **kw):
    return tiny_config(tmp_path, ema={"enabled": True, "decay": 0.5}, objective={"name": "gkl_at"},
                       **kw)


def test_checkpoint_holds_each_parts_own_state(tmp_path):
    run_dir = fit(_raw(tmp_path))
    last = ck.load(os.path.join(run_dir, "last.pt"))
    trainer = Trainer(C.from_dict(_raw(tmp_path / "b")), str(tmp_path / "b" / "run"), None)
    trainer.parts.ema.load_state_dict({"shadow": last["ema"], "updates": last["ema_updates"]})
    again = trainer.parts.ema.state_dict()
    assert again["updates"] == last["ema_updates"] == last["step"] == 4  # EMA from the first step
    assert states_equal(again["shadow"], last["ema"])
    assert last["trace"].shape == (4, 6)  # one row per step of this 2 x 2-step run
    # per-step points: their mean is each epoch's mean loss (float64 sum written here)
    for e, row in enumerate(last["history"], start=1):
        losses = [float(t[2]) for t in last["trace"] if e - 1 < float(t[1]) <= e]
        assert len(losses) == 2
        assert sum(losses) / 2 == pytest.approx(row["loss"], rel=1e-9)


def test_checkpoint_in_the_first_release_layout_resumes(tmp_path):
    """Built by hand from the old key names (no ``trace``, no ``tf32``/``log`` settings)."""
    whole = fit(_raw(tmp_path / "a"))
    raw = _raw(tmp_path / "b")
    run_dir = fit(raw, stop_after=1)
    new = ck.load(os.path.join(run_dir, "last.pt"))
    old = {k: new[k] for k in OLD_KEYS if k in new}
    old["config"] = {k: v for k, v in new["config"].items() if k not in ("tf32", "log")}
    for name in os.listdir(run_dir):
        if name.endswith(".pt"):
            os.remove(os.path.join(run_dir, name))
    torch.save(dict(old, format=ck.FORMAT), os.path.join(run_dir, "last.pt"))
    with open(os.path.join(run_dir, "config.yaml")) as f:
        stored = yaml.safe_load(f)
    stored.pop("tf32"), stored.pop("log")
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        yaml.safe_dump(stored, f)
    fit(None, run_dir=run_dir, resume=True)
    a, b = ck.load(os.path.join(whole, "last.pt")), ck.load(os.path.join(run_dir, "last.pt"))
    for key in ("model", "ema", "objective"):
        assert states_equal(a[key], b[key]), key
    assert a["ema_updates"] == b["ema_updates"] and a["step"] == b["step"]


def test_run_whose_every_step_was_skipped_is_an_error(tmp_path, capsys, monkeypatch):
    from advtrain.cli import main
    from advtrain.objectives.trades import TRADES

    real = TRADES.loss

    def nan_loss(self, *a, **kw):
        loss, terms = real(self, *a, **kw)
        return loss * float("nan"), terms

    monkeypatch.setattr(TRADES, "loss", nan_loss)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, nan_policy="skip")))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) != 0
    out, err = capsys.readouterr()
    assert "done" not in out
    err = err.strip()
    assert err.startswith("advtrain train: error: ") and "\n" not in err
    assert "epoch 1 made no update" in err and "nan_policy: skip" in err


def test_bf16_autocast_covers_every_forward_of_an_awp_step(tmp_path):
    """CPU autocast stands in for CUDA's: every convolution of the attack, of AWP's proxy and of
    the main step must run in bf16 (channels_last on, as a GPU run would use)."""
    raw = _raw(tmp_path, awp={"enabled": True, "warmup": 1, "gamma": 0.01},
               model={"arch": "wrn-10-1", "channels_last": True})
    trainer = Trainer(C.from_dict(raw), str(tmp_path / "run"), None)
    p = trainer.parts
    p.autocast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    proxy = p.awp._fresh_proxy()  # the persistent proxy AWP refreshes at each call
    seen = {"model": [], "proxy": []}
    for name, net in (("model", p.model), ("proxy", proxy)):
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(lambda mod, inp, out, n=name: seen[n].append(
                    (inp[0].dtype, out.dtype)))
    trainer._set_epoch_hparams(1)
    x, y = next(iter(p.loader))
    before = {k: v.clone() for k, v in p.model.state_dict().items()}
    terms = trainer._train_step(x, y, 1)
    assert terms is not None and seen["model"] and seen["proxy"]
    for name, calls in seen.items():
        assert all(out == torch.bfloat16 for _, out in calls), name
        assert {inp for inp, _ in calls} <= {torch.float32, torch.bfloat16}, name
    after = p.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the step trained
    assert all(torch.isfinite(v.float()).all() for v in after.values())


@pytest.mark.parametrize("tf32,deterministic", [(True, True), (False, False)])
def test_tf32_and_cudnn_policy(tmp_path, tf32, deterministic):
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        raw = tiny_config(tmp_path, tf32=tf32, run={"deterministic": deterministic})
        Trainer(C.from_dict(raw), str(tmp_path / "run"), None)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32
        assert torch.backends.cudnn.allow_tf32 is tf32
        assert torch.backends.cudnn.benchmark is (not deterministic)
        assert torch.backends.cudnn.deterministic is deterministic
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved


def test_silent_run_prints_one_line_per_epoch_and_the_summary(tmp_path, capsys):
    fit(tiny_config(tmp_path))  # run.progress: false
    lines = capsys.readouterr().out.splitlines()
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in epochs] == ["epoch 1/2", "epoch 2/2"]
    for ln in epochs:
        for part in ("lr ", "eps 8.00/255", "loss ", "train adv acc ", "test subset of 8 images: clean ",
                     "%, PGD-1 ", " s"):
            assert part in ln, (part, ln)
    assert "ETA " in epochs[0] and "last epoch" in epochs[1]
    assert any(ln.startswith("clean % (test subset of 8 images)") for ln in lines)


def test_averages_with_different_settings_do_not_share_a_file(tmp_path):
    from advtrain.train.average import average_path, average_run

    raw = tiny_config(tmp_path, ema={"enabled": True, "decay": 0.5}, optim={"epochs": 2})
    run_dir = fit(raw)
    a = average_run(run_dir, tau=0.9, start=1, end=2)
    b = average_run(run_dir, tau=0.9000001, start=1, end=2)
    c = average_run(run_dir, tau=0.9, start=1, end=2, key="ema")
    assert len({a, b, c}) == 3 and all(os.path.isfile(p) for p in (a, b, c))
    assert ck.load(c)["average"]["source"] == "ema" and ck.load(a)["average"]["source"] == "model"
    assert a == average_path(run_dir, 0.9, 1, 2)
    shutil.rmtree(run_dir)


def test_teacher_check_result_is_printed(tmp_path, capsys):
    import re

    import numpy as np

    from advtrain.models import create_model
    from trainer_helpers import make_npz

    teacher_run = fit(tiny_config(tmp_path / "t"))
    teacher_path = str(tmp_path / "teacher.pt")
    torch.save(ck.load(os.path.join(teacher_run, "last.pt"))["model"], teacher_path)
    raw = tiny_config(tmp_path / "s", objective={"name": "gkl_kd"}, optim={"epochs": 1},
                      teacher={"checkpoint": teacher_path, "arch": "wrn-10-1"},
                      data={"test_subset": 100})
    _, test_npz = make_npz(tmp_path / "s", n_test=100)
    capsys.readouterr()
    fit(raw)
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "teacher" in ln)
    got = re.search(r"clean ([0-9.]+)% on the test subset of 100 images", line)
    assert got and "check passed" in line, line
    with np.load(test_npz) as f:  # every test image (the subset of 100 is all of them)
        x = torch.from_numpy(f["image"]).permute(0, 3, 1, 2).double() / 255
        y = torch.from_numpy(f["label"])
    teacher = create_model("wrn-10-1", dataset="cifar10").double().eval()
    teacher.load_state_dict(torch.load(teacher_path, weights_only=True))
    with torch.no_grad():
        expected = 100.0 * float((teacher(x).argmax(1) == y).double().mean())
    assert float(got.group(1)) == pytest.approx(expected, abs=0.005 + 1e-9)


def test_resume_refuses_a_teacher_file_that_changed(tmp_path):
    from advtrain.errors import CheckpointError
    from advtrain.io.safeload import file_sha256
    from advtrain.models import create_model

    teacher_path = str(tmp_path / "teacher.pt")
    torch.save(create_model("wrn-10-1", dataset="cifar10").state_dict(), teacher_path)
    raw = tiny_config(tmp_path, objective={"name": "gkl_kd"},
                      teacher={"checkpoint": teacher_path, "arch": "wrn-10-1"})
    run_dir = fit(raw, stop_after=1)
    recorded = ck.load(os.path.join(run_dir, "last.pt"))["teacher"]
    assert recorded == {"file": teacher_path, "sha256": file_sha256(teacher_path)}
    torch.save(create_model("wrn-10-1", dataset="cifar10").state_dict(), teacher_path)  # new init
    for force in (False, True):
        with pytest.raises(CheckpointError, match="teacher file .* changed since the run started"):
            fit(None, run_dir=run_dir, resume=True, force=force)
