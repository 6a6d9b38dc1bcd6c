"""``log.tensorboard: true``: RUN_DIR/tb/ event files hold every metrics.csv scalar, per step and per
epoch (read back with TensorBoard's own event reader); without the package, one line."""
from __future__ import annotations

import csv
import os
import sys

import pytest

from advtrain.train.loop import fit
from trainer_helpers import one_thread, tiny_config


@pytest.fixture(autouse=True)
def _threads():
    with one_thread():
        yield


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(run_dir, "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_files_hold_every_csv_scalar(tmp_path):
    raw = tiny_config(tmp_path, log={"tensorboard": True}, ema={"enabled": True, "decay": 0.5})
    run_dir = fit(raw)
    events = _events(run_dir)
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        e = int(row["epoch"])
        for col, text in row.items():
            if col == "epoch" or text == "":
                continue
            got = dict(events[f"epoch/{col}"])[e]  # event files store float32
            assert got == pytest.approx(float(text), rel=1e-6, abs=1e-7), (col, e)
    # per step: every loss term and the train accuracy, with lr and eps_t, at steps 1..4
    for term in ("loss", "acc_adv", "lr", "eps_t"):
        assert [s for s, _ in events[f"step/{term}"]] == [1, 2, 3, 4], term
    for e, row in enumerate(rows, start=1):  # the epoch mean is the mean of its two steps
        steps = [v for s, v in events["step/loss"] if 2 * (e - 1) < s <= 2 * e]
        assert sum(steps) / 2 == pytest.approx(float(row["loss"]), rel=1e-5)


def test_missing_package_is_one_line(tmp_path, capsys, monkeypatch):
    from advtrain.cli import main

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as if not installed
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, log={"tensorboard": True})))
    run_dir = tmp_path / "run"
    assert main(["train", str(path), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("advtrain train: error: ") and "\n" not in err
    assert "pip install tensorboard" in err and "log.tensorboard" in err
    assert not os.path.exists(run_dir)
