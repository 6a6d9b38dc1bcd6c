"""Catastrophic-overfitting guard: the rule on injected accuracies; genuine catastrophic overfitting
reproduced on real CIFAR-10 images and rolled back by the guard (``configs/cpu/co_cnn_fgsm16.yaml``:
GradAlign's one-layer CNN, FGSM from x at 16/255, about 30 s); and the trainer's detection path on a
tiny run whose robustness collapses on both attacks (an lr spike, not CO: the FGSM condition is
switched off where stop / rollback / resume of a stopped run are tested, and one test checks that the
default tolerance does not call that run CO)."""
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


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_states(accs, drop=0.2, tol=0.05):
    state, fired = None, []
    for e, (pgd, fgsm) in enumerate(accs, start=1):
        state = check_epoch(state, e, pgd, fgsm, drop=drop, tolerance=tol)
        fired.append(state["fired"])
    return state, fired


def test_rule_on_injected_accuracies():
    # Wong et al. / Kim et al. signature: PGD 0.40 -> 0.02 while FGSM 0.50 -> 0.85
    state, fired = run_states([(0.30, 0.45), (0.40, 0.50), (0.02, 0.85), (0.01, 0.95)])
    assert fired == [False, False, True, True]  # still compared with the best good epoch (2)
    assert state["good"]["epoch"] == 2 and state["collapses"] == [3, 4]
    # robustness falling on both attacks (a diverging lr) is not catastrophic overfitting
    assert run_states([(0.40, 0.50), (0.05, 0.10)])[1] == [False, False]
    # a drop of exactly `drop` is not more than drop; FGSM may fall by the tolerance
    assert not collapsed({"pgd": 0.5, "fgsm": 0.5}, 0.25, 0.6, drop=0.25, tolerance=0.0)
    assert collapsed({"pgd": 0.5, "fgsm": 0.5}, 0.2, 0.46, drop=0.25, tolerance=0.05)
    assert not collapsed({"pgd": 0.5, "fgsm": 0.5}, 0.2, 0.44, drop=0.25, tolerance=0.05)


def test_a_collapse_spread_over_epochs_is_measured_from_the_best_good_epoch():
    # PGD 0.15 -> 0.10 -> 0.05 -> 0.01, each step under drop 0.08 on its own, FGSM rising: caught at
    # the epoch where PGD is more than 0.08 below the best good epoch (1), not missed step by step
    state, fired = run_states([(0.15, 0.16), (0.10, 0.18), (0.05, 0.40), (0.01, 0.80)], drop=0.08)
    assert fired == [False, False, True, True]
    assert state["good"]["epoch"] == 1 and state["collapses"] == [3, 4]
    # a good epoch that does not beat the best keeps the best as the reference (and best.pt)
    state, _ = run_states([(0.30, 0.35), (0.28, 0.33), (0.31, 0.30)])
    assert state["good"] == {"epoch": 3, "pgd": 0.31, "fgsm": 0.30}
    assert run_states([(0.30, 0.35), (0.28, 0.33)])[0]["good"]["epoch"] == 1


def test_guard_rolls_back_genuine_catastrophic_overfitting(tmp_path, capsys, shared_cifar10_dir):
    """The reproduction of Andriushchenko & Flammarion 2020, Fig. 11 (a one-layer CNN trained with
    FGSM collapses), as configs/cpu/co_cnn_fgsm16.yaml runs it on the 20,000 real CIFAR-10 images of
    ../shared: PGD-10 accuracy falls to near 0 while FGSM accuracy climbs far above where it was (the
    FGSM-trained model has learned to defeat FGSM alone; Wong et al. 2020, Kim et al. 2021)."""
    raw = C.read_yaml(os.path.join(REPO, "configs", "cpu", "co_cnn_fgsm16.yaml"))
    raw["run"] = {**raw["run"], "out_dir": str(tmp_path), "progress": False}
    raw["data"] = {**raw["data"], "train_npz": os.path.join(shared_cifar10_dir, "train.npz"),
                   "test_npz": os.path.join(shared_cifar10_dir, "test.npz")}
    cfg = C.from_dict(raw)
    assert cfg.guard.policy == "rollback" and cfg.attack.name == "fgsm"
    run = fit(cfg, run_dir=str(tmp_path / "run"))
    rows = _rows(run)
    co = [r["co"] for r in rows]
    k = co.index("1") + 1  # the first flagged epoch; the run stopped there
    assert co == ["0"] * (k - 1) + ["1"] and 2 <= k <= cfg.optim.epochs
    pgd, fgsm = ([float(r[key]) for r in rows] for key in ("test_pgd", "test_fgsm"))
    best = int(rows[-1]["best_epoch"])
    assert best < k and pgd[best - 1] == max(pgd[:k - 1])  # the most robust good epoch
    # the signature of catastrophic overfitting, not of a wrecked model: PGD lost most of what it
    # had (more than the 0.08 the config's guard.drop asks, and below half of its best), while FGSM
    # accuracy rose by more than 10 points and now exceeds PGD's by more than 15
    assert pgd[best - 1] - pgd[k - 1] > 0.08 and pgd[k - 1] < 0.5 * pgd[best - 1]
    assert fgsm[k - 1] > fgsm[best - 1] + 0.10 and fgsm[k - 1] > pgd[k - 1] + 0.15
    out = capsys.readouterr().out
    assert "CATASTROPHIC OVERFITTING" in out and f"rolled back to epoch {best}" in out
    # rolled back: the run's final weights are the best good epoch's, and they are robust again
    last, kept = ck.load(os.path.join(run, "last.pt")), ck.load(os.path.join(run, f"epoch_{best}.pt"))
    assert last["epoch"] == k and last["guard"]["stopped"] == k
    assert states_equal(last["model"], kept["model"])
    assert states_equal(ck.load(os.path.join(run, "best.pt"))["model"], kept["model"])
    summary = open(os.path.join(run, "summary.txt")).read()
    assert f"guard (rollback): epoch(s) {k} flagged, weights rolled back, run stopped; best good epoch {best}" in summary


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
    assert "guard (stop): epoch(s) 2 flagged, run stopped; best good epoch 1 (best.pt)" in summary
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
    expected, top, best = [], -1.0, 0  # every epoch good: best.pt = the highest PGD so far (latest of equals)
    for e, p in enumerate(pgd, start=1):
        if p >= top:
            top, best = p, e
        expected.append(str(best))
    assert [r["best_epoch"] for r in rows] == expected and expected[1] == "1"
    assert ck.load(os.path.join(run, "best.pt"))["epoch"] == int(expected[-1])
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
