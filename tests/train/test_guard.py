"""Catastrophic-overfitting guard: the rule on injected accuracies, and the trainer's detection path
on a real run's per-epoch PGD / FGSM test numbers (stop, rollback, resume of a stopped run).

What these tests do not do: reproduce catastrophic overfitting itself. The real run below is a
collapse of robustness on both attacks (an lr spike), not CO (PGD falling while FGSM holds), so the
tests that need the guard to fire switch the FGSM condition off (``fgsm_tolerance: 1``), and one test
checks that with the default tolerance the same run is, correctly, not called CO. No setting found on
CPU produced genuine CO within a test's budget, nor within a few CPU minutes per run on real CIFAR-10
subsets (docs/BENCHMARKS.md, "Catastrophic overfitting on CPU"; ``bench/co_reproduce.py``)."""
from __future__ import annotations

import csv
import os

import pytest

from advtrain import config as C
from advtrain.errors import InputError, UnknownNameError
from advtrain.train import checkpoint as ck
from advtrain.train.guard import check_epoch, collapsed
from advtrain.train.loop import fit
from trainer_helpers import make_npz, one_thread, states_equal, tiny_config


@pytest.fixture(autouse=True)
def _threads():
    with one_thread():
        yield


def run_states(accs, drop=0.2, tol=0.05):
    state, fired = None, []
    for e, (pgd, fgsm) in enumerate(accs, start=1):
        state = check_epoch(state, e, pgd, fgsm, drop=drop, tolerance=tol)
        fired.append(state["fired"])
    return state, fired


def test_rule_on_injected_accuracies():
    # Wong et al. / Kim et al. signature: PGD 0.40 -> 0.02 while FGSM 0.50 -> 0.85
    state, fired = run_states([(0.30, 0.45), (0.40, 0.50), (0.02, 0.85), (0.01, 0.95)])
    assert fired == [False, False, True, True]  # still compared with the last good epoch (2)
    assert state["good"]["epoch"] == 2 and state["collapses"] == [3, 4]
    # robustness falling on both attacks (a diverging lr) is not catastrophic overfitting
    assert run_states([(0.40, 0.50), (0.05, 0.10)])[1] == [False, False]
    # a drop of exactly `drop` is not more than drop; FGSM may fall by the tolerance
    assert not collapsed({"pgd": 0.5, "fgsm": 0.5}, 0.25, 0.6, drop=0.25, tolerance=0.0)
    assert collapsed({"pgd": 0.5, "fgsm": 0.5}, 0.2, 0.46, drop=0.25, tolerance=0.05)
    assert not collapsed({"pgd": 0.5, "fgsm": 0.5}, 0.2, 0.44, drop=0.25, tolerance=0.05)


def _collapsing(folder, policy, epochs=3, fgsm_tolerance=1.0):
    """A real run: epoch 1 (lr 0.05) learns the easy two-class data to 16/16 test images under PGD;
    epoch 2's lr 10 wrecks the model (8/16). FGSM falls too (16/16 -> 8/16), so this is not
    catastrophic overfitting: the FGSM condition is switched off (fgsm_tolerance 1) where what is
    tested is the trainer's detection path on its own numbers."""
    train, test = make_npz(os.path.join(folder, "data"), n_train=32, n_test=16)
    return tiny_config(folder, objective={"name": "ce"},
                       data={"train_npz": train, "test_npz": test, "test_subset": 16, "batch_size": 4},
                       attack={"eps": "1/255"}, eval={"test_pgd_steps": 2},
                       optim={"epochs": epochs, "lr": 0.05, "lr_table": [0.05, 10.0, 0.05][:epochs]},
                       guard={"policy": policy, "fgsm_tolerance": fgsm_tolerance})


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def test_guard_stops_at_the_last_good_epoch_on_a_real_run(tmp_path, capsys):
    run = fit(_collapsing(str(tmp_path), "stop"))
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]  # stopped: epoch 3 never ran
    pgd = [float(r["test_pgd"]) for r in rows]
    assert pgd[0] - pgd[1] > 0.2  # the real numbers carry the drop the rule acts on
    assert [r["co"] for r in rows] == ["0", "1"] and rows[1]["test_fgsm"] != ""
    assert "CATASTROPHIC OVERFITTING" in capsys.readouterr().out
    best, last = ck.load(os.path.join(run, "best.pt")), ck.load(os.path.join(run, "last.pt"))
    first = ck.load(os.path.join(run, "epoch_1.pt"))
    assert best["epoch"] == 1 and states_equal(best["model"], first["model"])
    assert last["epoch"] == 2 and not states_equal(last["model"], first["model"])
    assert last["guard"]["stopped"] == 2
    summary = open(os.path.join(run, "summary.txt")).read()
    assert "guard (stop): epoch(s) 2 flagged, run stopped; last good epoch 1 (best.pt)" in summary
    # resuming a stopped run trains nothing more
    fit(None, run_dir=run, resume=True)
    assert ck.load(os.path.join(run, "last.pt"))["epoch"] == 2 and len(_rows(run)) == 2


def test_guard_rollback_restores_the_last_good_weights(tmp_path):
    run = fit(_collapsing(str(tmp_path), "rollback", epochs=2))
    last, first = ck.load(os.path.join(run, "last.pt")), ck.load(os.path.join(run, "epoch_1.pt"))
    assert states_equal(last["model"], first["model"])
    assert [r["co"] for r in _rows(run)] == ["0", "1"]


def test_default_tolerance_does_not_call_a_fall_on_both_attacks_co(tmp_path, capsys):
    # the same real run with the guard's default fgsm_tolerance: PGD falls by more than `drop` but
    # so does FGSM (by more than the tolerance), the signature of a wrecked model, not of CO
    defaults = C.from_dict(tiny_config(str(tmp_path / "d"), objective={"name": "ce"})).guard
    run = fit(_collapsing(str(tmp_path), "stop", fgsm_tolerance=defaults.fgsm_tolerance))
    rows = _rows(run)
    pgd = [float(r["test_pgd"]) for r in rows]
    fgsm = [float(r["test_fgsm"]) for r in rows]
    assert pgd[0] - pgd[1] > defaults.drop  # the PGD side alone would fire ...
    assert fgsm[0] - fgsm[1] > defaults.fgsm_tolerance + 0.1  # ... but FGSM fell too, with margin
    assert [r["co"] for r in rows] == ["0", "0", "0"]  # never fired, the run was not stopped
    assert [r["best_epoch"] for r in rows] == ["1", "2", "3"]  # every epoch good: best.pt follows
    assert ck.load(os.path.join(run, "best.pt"))["epoch"] == 3
    assert "CATASTROPHIC OVERFITTING" not in capsys.readouterr().out
    assert "guard (stop): no epoch flagged" in open(os.path.join(run, "summary.txt")).read()


def test_guard_settings_are_checked_where_they_enter(tmp_path):
    base = tiny_config(str(tmp_path), objective={"name": "ce"})
    with pytest.raises(InputError, match="eval.every"):
        C.from_dict({**base, "guard": {"policy": "stop"}, "eval": {"every": 2}})
    with pytest.raises(InputError, match="eval.test_pgd_steps >= 1"):
        C.from_dict({**base, "guard": {"policy": "warn"}, "eval": {"test_pgd_steps": 0}})
    with pytest.raises(InputError, match="best.pt"):
        C.from_dict({**base, "guard": {"policy": "warn"}, "data": {**base["data"], "holdout": 4}})
    with pytest.raises(UnknownNameError, match="did you mean 'rollback'"):
        C.from_dict({**base, "guard": {"policy": "rolback"}})
    assert C.from_dict(base).guard.policy == "off"
