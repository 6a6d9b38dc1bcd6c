"""Recipe plumbing: attack defaults resolved from the objective, per-epoch lr table, held-out PGD
selection (best.pt), the per-epoch test attack's threat model, ``advtrain average`` from the run's
``average:`` section."""
from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from advtrain.train import checkpoint as ck
from advtrain import config as C
from advtrain.cli import main
from advtrain.errors import InputError
from advtrain.train.loop import fit
from trainer_helpers import one_thread, states_equal, tiny_config


@pytest.fixture(autouse=True)
def _threads():
    with one_thread():
        yield


def read_csv(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- attack defaults

def test_resolved_config_shows_the_objectives_attack_defaults(tmp_path):
    """An unset attack entry takes the objective's default (LBGAT: eps 0.031, step 0.007, SPEC 4.4;
    PGD-AT: uniform start); config.yaml shows it and the built attack uses it; a set entry wins."""
    from advtrain.train.loop import Trainer
    from advtrain.train.setup import prepare_run_dir, start_run_dir

    raw = tiny_config(tmp_path, objective={"name": "lbgat", "natural_arch": "wrn-10-1"},
                      attack={"schedule": "fixed", "ramp": False, "steps": None, "step_size": None})
    cfg, run_dir, state = prepare_run_dir(raw, None, False, False)
    trainer = Trainer(cfg, run_dir, state)
    start_run_dir(cfg, run_dir)
    written = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))["attack"]
    assert written["eps"] == pytest.approx(0.031, rel=1e-12)
    assert written["step_size"] == pytest.approx(0.007, rel=1e-12)
    assert (written["steps"], written["norm"], written["init"], written["bn_mode"]) == (
        10, "Linf", "normal", "eval")
    att = trainer.parts.objective.attack
    assert (att.eps, att.alpha, att.steps, att.norm, att.init) == (
        written["eps"], written["step_size"], written["steps"], written["norm"], written["init"])
    trainer._set_epoch_hparams(1)  # the per-epoch budget comes from the same resolved values
    assert (att.eps, att.alpha, att.steps) == (written["eps"], written["step_size"], 10)

    pgd = C.from_dict(tiny_config(tmp_path / "b", objective={"name": "pgd_at"},
                                  attack={"init": None, "eps": "4/255", "steps": 3}))
    res = C.resolve(pgd)["attack"]
    assert res["init"] == "uniform" and res["eps"] == pytest.approx(4 / 255) and res["steps"] == 3


def test_resolved_attack_round_trips_through_config_yaml(tmp_path):
    cfg = C.from_dict(tiny_config(tmp_path, objective={"name": "lbgat", "natural_arch": "wrn-10-1"}))
    again = C.from_dict(yaml.safe_load(C.dump(cfg)))
    assert C.resolve(again) == C.resolve(cfg)
    assert again.attack.eps == pytest.approx(0.031)  # stored explicitly now, not left to a default


# ----------------------------------------------------------------------------- lr table

def _optim(**kw):
    return C.from_dict({"optim": kw}).optim


def test_lr_table_list_and_mapping_against_a_written_table():
    from advtrain.config.schedules import lr_at

    full = _optim(epochs=4, lr=0.1, lr_table=[0.05, 0.3, 0.2, "1e-3"])
    assert [lr_at(e, full) for e in range(1, 5)] == [0.05, 0.3, 0.2, 0.001]
    # mapping: only the named epochs differ from the piecewise schedule (x0.1 from epoch 3)
    part = _optim(epochs=4, lr=0.1, schedule="piecewise", milestones=[3], lr_table={1: 0.02, "4": 0.5})
    want = [0.02, 0.1, 0.1 * 0.1, 0.5]
    assert all(math.isclose(lr_at(e, part), w, rel_tol=1e-12) for e, w in zip(range(1, 5), want))


def test_lr_table_survives_dump_and_reload():
    from advtrain.config.schedules import lr_at

    cfg = C.from_dict({"optim": {"epochs": 3, "schedule": "piecewise", "lr_table": {2: 0.5}}})
    again = C.from_dict(yaml.safe_load(C.dump(cfg)))  # YAML dump writes the key as "2"
    assert again.optim.lr_table == {2: 0.5}
    assert [lr_at(e, again.optim) for e in (1, 2, 3)] == [0.2, 0.5, 0.2]


@pytest.mark.parametrize("table,match", [
    ([0.1, 0.1], "has 2 entries but optim.epochs = 3"),
    ({0: 0.1}, "not an epoch >= 1"),
    ({"x": 0.1}, "not an epoch >= 1"),
    ({1: -0.1}, "finite lr > 0"),
    ([0.1, 0.0, 0.1], "finite lr > 0"),
    ("0.1", "neither a list nor a mapping"),
])
def test_lr_table_mistakes_are_one_line_errors(table, match):
    with pytest.raises(InputError, match=match) as info:
        C.from_dict({"optim": {"epochs": 3, "lr_table": table}})
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- test attack threat model

class Linear2(nn.Module):
    """Logits (s, -s) with s = w.(x - 0.5), w = 1/sqrt(d): an input-space margin of exactly s."""

    def __init__(self, d):
        super().__init__()
        self.w = nn.Parameter(torch.full((d,), 1.0 / math.sqrt(d), dtype=torch.float32))

    def forward(self, x):
        s = (x.flatten(1) - 0.5) @ self.w
        return torch.stack([s, -s], 1)


def test_clean_and_pgd_measures_the_given_norm():
    """Margin 1 along w: an L2 ball of radius 0.5 cannot cross it (needs 1), a Linf ball of 8/255
    can (it moves s by up to eps*sqrt(d) = 1.74)."""
    from advtrain.train.setup import clean_and_pgd

    d = 3 * 32 * 32
    model = Linear2(d)
    x = (0.5 + model.w.detach() * 1.0).view(1, 3, 32, 32).repeat(4, 1, 1, 1)  # s = 1 for every row
    y = torch.zeros(4, dtype=torch.long)
    assert clean_and_pgd(model, x, y, steps=10, seed=0, eps=0.5, norm="L2") == (1.0, 1.0)
    assert clean_and_pgd(model, x, y, steps=10, seed=0, eps=8 / 255, norm="Linf") == (1.0, 0.0)
    assert clean_and_pgd(model, x, y, steps=10, seed=0) == (1.0, 0.0)  # default: Linf 8/255


def test_trainer_test_attack_follows_attack_norm_and_final_eps(tmp_path, monkeypatch):
    import advtrain.train.setup as TS

    seen = []
    real = TS.clean_and_pgd

    def spy(model, x, y, **kw):
        seen.append(kw)
        return real(model, x, y, **kw)

    monkeypatch.setattr(TS, "clean_and_pgd", spy)
    raw = tiny_config(tmp_path, attack={"norm": "L2", "eps": 0.5, "schedule": "executed", "ramp": True})
    rows = read_csv(fit(raw))
    assert len(seen) == 2 and all(kw["norm"] == "L2" and kw["eps"] == 0.5 for kw in seen)
    assert float(rows[0]["eps_t"]) == pytest.approx(0.25)  # training ramps; the test uses the final eps


# ----------------------------------------------------------------------------- held-out selection

def _holdout_cfg(folder, **kw):
    return tiny_config(folder, data={"holdout": 4}, optim={"epochs": 3, "lr": 0.1},
                       ema={"enabled": True, "decay": 0.5},
                       eval={"test_pgd_steps": 1, "holdout_every": 1, "holdout_pgd_steps": 2}, **kw)


def test_holdout_best_checkpoint_is_the_best_epoch(tmp_path):
    from advtrain.models import create_model

    run_dir = fit(_holdout_cfg(tmp_path))
    rows = read_csv(run_dir)
    figures = [float(r["holdout_pgd"]) for r in rows]
    best_epoch = max(range(1, 4), key=lambda e: (figures[e - 1], e))  # ties: the later epoch (>=)
    assert [int(r["best_epoch"]) for r in rows][-1] == best_epoch
    best = ck.load(os.path.join(run_dir, "best.pt"))
    assert best["best"]["epoch"] == best_epoch and best["best"]["weights"] == "ema"
    assert best["best"]["holdout_pgd"] == figures[best_epoch - 1]
    same_epoch = ck.load(ck.epoch_path(run_dir, best_epoch))
    assert states_equal(best["model"], same_epoch["model"]) and states_equal(best["ema"], same_epoch["ema"])
    # the figure is on the held-out images (the first 4 training images) with the EMA weights
    with np.load(os.path.join(tmp_path, "train.npz")) as f:
        x = torch.from_numpy(f["image"][:4]).permute(0, 3, 1, 2).float() / 255
        y = torch.from_numpy(f["label"][:4])
    model = create_model("wrn-10-1", dataset="cifar10")
    model.load_state_dict(best["ema"])
    model.eval()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).double().mean().item()
    assert float(rows[best_epoch - 1]["holdout_clean"]) == clean
    assert all(r["holdout_pgd"] != "" for r in rows)


def test_holdout_best_survives_resume(tmp_path, monkeypatch):
    """Scripted held-out figures 0.5, 0.25, 0.375: the best stays epoch 1 across a stop after
    epoch 2 (a resumed run that forgot it would pick epoch 3)."""
    import advtrain.train.setup as TS

    script = iter([0.5, 0.25, 0.375])
    real = TS.clean_and_pgd

    def scripted(model, x, y, **kw):
        clean, robust = real(model, x, y, **kw)
        return (clean, next(script)) if kw.get("loss") == "cw" else (clean, robust)

    monkeypatch.setattr(TS, "clean_and_pgd", scripted)
    raw = _holdout_cfg(tmp_path)
    run_dir = fit(raw, stop_after=2)
    assert ck.load(os.path.join(run_dir, "best.pt"))["best"]["epoch"] == 1
    fit(None, run_dir=run_dir, resume=True)
    rows = read_csv(run_dir)
    assert [int(r["best_epoch"]) for r in rows] == [1, 1, 1]
    assert [float(r["holdout_pgd"]) for r in rows] == [0.5, 0.25, 0.375]
    best = ck.load(os.path.join(run_dir, "best.pt"))
    assert best["best"]["epoch"] == 1 and best["best"]["holdout_pgd"] == 0.5
    assert states_equal(best["ema"], ck.load(ck.epoch_path(run_dir, 1))["ema"])


def test_no_holdout_no_best(tmp_path):
    run_dir = fit(tiny_config(tmp_path, optim={"epochs": 1}))
    assert not os.path.exists(os.path.join(run_dir, "best.pt"))
    assert read_csv(run_dir)[0]["holdout_pgd"] == ""


# ----------------------------------------------------------------------------- average from the recipe

def _fake_run(folder, epochs, average=None):
    """epoch_{e}.pt with random weights, plus a config.yaml with ``average`` (None: no config.yaml)."""
    gen = torch.Generator().manual_seed(0)
    states = []
    for e in range(1, epochs + 1):
        sd = {"w": torch.randn(3, 4, generator=gen)}
        ck.save({"model": sd, "arch": "wrn-10-1", "dataset": "cifar10", "num_classes": 10,
                 "epoch": e}, ck.epoch_path(str(folder), e))
        states.append(sd)
    if average is not None:
        cfg = C.from_dict({"optim": {"epochs": epochs}, "average": average})
        (folder / "config.yaml").write_text(C.dump(cfg))
    return states


def _direct(states, tau, start, end):
    out = tau ** (end - start) * states[start - 1]["w"].double()
    for i in range(start + 1, end + 1):
        out = out + (1 - tau) * tau ** (end - i) * states[i - 1]["w"].double()
    return out


def test_average_cli_reads_the_runs_average_section(tmp_path, capsys):
    states = _fake_run(tmp_path, 4, average={"tau": 0.5, "start": 2})
    assert main(["average", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "tau 0.5, start 2, end 4" in out and "config.yaml" in out
    got = torch.load(tmp_path / "average_tau0.5_2_4.pt", weights_only=True)
    assert torch.allclose(got["model"]["w"].double(), _direct(states, 0.5, 2, 4), rtol=1e-6, atol=1e-6)
    assert got["average"] == {"tau": 0.5, "start": 2, "end": 4, "source": "model"}
    # a flag overrides its entry only; the others still come from the recipe
    assert main(["average", str(tmp_path), "--tau", "0.25", "--end", "3"]) == 0
    got = torch.load(tmp_path / "average_tau0.25_2_3.pt", weights_only=True)
    assert torch.allclose(got["model"]["w"].double(), _direct(states, 0.25, 2, 3), rtol=1e-6, atol=1e-6)


def test_average_cli_without_config_uses_the_reference_defaults(tmp_path, capsys):
    _fake_run(tmp_path, 3)
    assert main(["average", str(tmp_path)]) == 0
    assert os.path.isfile(tmp_path / "average_tau0.9_1_3.pt")
    assert "reference defaults" in capsys.readouterr().out


def test_average_cli_recipe_end_beyond_the_trained_epochs_is_one_line(tmp_path, capsys):
    _fake_run(tmp_path, 2, average={"end": 2})
    (tmp_path / "epoch_2.pt").unlink()
    assert main(["average", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing [2]" in err[0]

