"""Trainer: every objective trains on tiny generated data; outputs, refusals, NaN guard, EMA."""
from __future__ import annotations

import csv
import os

import pytest
import torch

from advtrain.train import checkpoint as ck
from advtrain import config as C
from advtrain.errors import InputError
from advtrain.train.ema import EMA
from advtrain.train.loop import NonFiniteError, fit
from trainer_helpers import one_thread, tiny_config

OBJECTIVE_OPTIONS = {
    "pgd_at": {}, "trades": {"beta": 1.0}, "mart": {"beta": 1.0},
    "lbgat": {"beta": 1.0, "natural_arch": "wrn-10-1"},
    "ikl_at": {"alpha": 1.0, "beta": 1.0}, "gkl_at": {"alpha": 1.0, "beta": 1.0},
}


def read_csv(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(autouse=True)
def _threads():
    with one_thread():
        yield


@pytest.mark.parametrize("name", sorted(OBJECTIVE_OPTIONS))
def test_each_objective_lowers_training_loss(tmp_path, name):
    raw = tiny_config(tmp_path, objective={"name": name, **OBJECTIVE_OPTIONS[name]},
                      optim={"epochs": 2, "lr": 0.1})
    run_dir = fit(raw)
    rows = read_csv(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0], losses
    for key in ("lr", "eps_t", "steps", "acc_adv", "test_clean", "test_pgd", "seconds",
                "skipped_batches"):
        assert rows[0][key] != "", key


def test_outputs_and_checkpoint_contract(tmp_path):
    raw = tiny_config(tmp_path, ema={"enabled": True, "decay": 0.5}, awp={"enabled": True, "warmup": 2},
                      objective={"name": "gkl_at"}, paper_row=1)
    run_dir = fit(raw)
    for name in ("config.yaml", "metrics.csv", "curves.png", "curves.svg", "summary.txt", "epoch_1.pt",
                 "epoch_2.pt", "last.pt"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert "85.31" in open(os.path.join(run_dir, "summary.txt")).read()
    rows = read_csv(run_dir)
    assert all(r["test_clean_ema"] != "" and r["test_pgd_ema"] != "" for r in rows)
    ckpt = torch.load(os.path.join(run_dir, "epoch_2.pt"), weights_only=True)
    for key in ("model", "ema", "arch", "dataset", "num_classes", "config", "optimizer",
                "objective", "rng", "versions", "git_commit", "epoch", "step"):
        assert key in ckpt, key
    assert (ckpt["arch"], ckpt["dataset"], ckpt["num_classes"], ckpt["epoch"]) == ("wrn-10-1", "cifar10", 10, 2)
    assert ckpt["step"] == 4 and ckpt["config"]["optim"]["epochs"] == 2
    assert not torch.equal(ckpt["ema"]["fc.weight"], ckpt["model"]["fc.weight"])
    assert any(k.startswith("prior.") for k in ckpt["objective"])
    stored = C.load(os.path.join(run_dir, "config.yaml"))
    assert C.resolve(stored) == ckpt["config"]
    from advtrain.models import create_model
    create_model("wrn-10-1", dataset="cifar10").load_state_dict(ckpt["ema"])  # EMA is loadable


def test_lr_and_budget_follow_the_schedules(tmp_path):
    raw = tiny_config(tmp_path, optim={"epochs": 2, "lr": 0.2, "schedule": "cosine"},
                      attack={"schedule": "executed", "ramp": True}, data={"test_subset": 0})
    rows = read_csv(fit(raw))
    assert float(rows[0]["lr"]) == pytest.approx(0.1 * (1 + __import__("math").cos(__import__("math").pi / 3)))
    assert float(rows[1]["eps_t"]) == pytest.approx(8 / 255) and rows[1]["steps"] == "5"
    assert float(rows[0]["step_size"]) == pytest.approx(2 / 255)
    assert rows[0]["test_clean"] == ""


def test_existing_run_dir_is_not_overwritten(tmp_path):
    raw = tiny_config(tmp_path, optim={"epochs": 1}, data={"test_subset": 0})
    run_dir = fit(raw)
    before = os.path.getmtime(os.path.join(run_dir, "last.pt"))
    with pytest.raises(InputError, match="already exists; continue it with --resume"):
        fit(raw)
    with pytest.raises(InputError, match="optim.lr: 0.05 -> 0.1"):
        fit(tiny_config(tmp_path, optim={"epochs": 1, "lr": 0.1}, data={"test_subset": 0}),
            run_dir=run_dir, resume=True)
    assert os.path.getmtime(os.path.join(run_dir, "last.pt")) == before


def _nan_at(monkeypatch, step: int, term: str):
    from advtrain.objectives.trades import TRADES

    original = TRADES.loss
    calls = {"n": 0}

    def loss(self, model, x, x_adv, y, *, update_state=True):
        out, terms = original(self, model, x, x_adv, y, update_state=update_state)
        calls["n"] += 1
        if calls["n"] == step:
            terms = dict(terms, **{term: torch.tensor(float("nan"))})
            out = out * float("nan") if term == "loss" else out
        return out, terms

    monkeypatch.setattr(TRADES, "loss", loss)


def test_nan_stops_with_one_line_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    raw = tiny_config(tmp_path, run={"checkpoint_every_steps": 1}, optim={"epochs": 2})
    _nan_at(monkeypatch, step=3, term="kl")
    run_dir = os.path.join(tmp_path, "runs", "t")
    with pytest.raises(NonFiniteError, match=r"loss term 'kl' at epoch 2 step 1") as info:
        fit(raw)
    assert "\n" not in str(info.value) and "last.pt" in str(info.value)
    last = ck.load(os.path.join(run_dir, "last.pt"))
    assert (last["epoch"], last["step"]) == (1, 2)
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_nan_policy_skip_counts_batches(tmp_path, monkeypatch):
    raw = tiny_config(tmp_path, nan_policy="skip", optim={"epochs": 2}, data={"test_subset": 0})
    _nan_at(monkeypatch, step=2, term="loss")
    rows = read_csv(fit(raw))
    assert [int(r["skipped_batches"]) for r in rows] == [1, 0]
    assert ck.load(os.path.join(tmp_path, "runs", "t", "last.pt"))["step"] == 3


def test_bf16_on_cpu_refused_before_training(tmp_path):
    with pytest.raises(InputError, match="bf16 needs a CUDA device"):
        fit(tiny_config(tmp_path, precision="bf16"))


def test_wd_exclude_bn_groups():
    from advtrain.train.setup import make_optimizer
    from advtrain.models import create_model
    from advtrain.config import build_objective

    cfg = C.from_dict({"optim": {"wd_exclude_bn": True}, "model": {"arch": "wrn-10-1"}})
    model = create_model("wrn-10-1", dataset="cifar10")
    opt = make_optimizer(cfg, model, build_objective("trades", dataset="cifar10", num_classes=10))
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    n_bn = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
               for p in m.parameters())
    assert sum(p.numel() for p in opt.param_groups[1]["params"]) == n_bn


# ----------------------------------------------------------------------------- EMA hook

def _net():
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))


def test_ema_copies_then_averages_and_copies_int_buffers():
    net = _net()
    ema = EMA(net, decay=0.9, start_epoch=2)
    ema.update(net, epoch=1)
    assert ema.shadow is None  # before start_epoch
    ema.update(net, epoch=2)
    first = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].num_batches_tracked += 5
    ema.update(net, epoch=2)
    sd = net.state_dict()
    assert torch.allclose(ema.shadow["0.weight"], 0.9 * first["0.weight"] + 0.1 * sd["0.weight"])
    assert ema.shadow["1.num_batches_tracked"].dtype == torch.long
    assert int(ema.shadow["1.num_batches_tracked"]) == 5
    assert ema.shadow["0.weight"].data_ptr() != sd["0.weight"].data_ptr()


def test_ema_dm_warmup_schedule():
    net = _net()
    ema = EMA(net, decay=0.995, dm_warmup_steps=3)
    decays = []
    for _ in range(6):
        decays.append(ema.current_decay())
        ema.update(net, epoch=1)
    assert decays[:3] == [0.0, 0.0, 0.0]
    assert decays[3:] == pytest.approx([1 / 10, 2 / 11, 3 / 12])


# ----------------------------------------------------------------------------- CLI

def _yaml(tmp_path, raw):
    import yaml

    path = os.path.join(tmp_path, "cfg.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


@pytest.mark.parametrize("override,message", [
    ("objective.name=trade", "unknown objective 'trade'; did you mean 'trades'"),
    ("objective.bta=1", "did you mean 'objective.beta'"),
    ("model.arch=wrn-34-1O", "unknown architecture 'wrn-34-1O'; did you mean 'wrn-34-10'"),
    ("model.arch=wrn-12-2", "(depth-4) % 6 == 0"),  # the registry's own check of parsed names
    ("model.arch=cnn-0x4", "needs layers >= 1"),
    ("data.dataset=cifar1000", "unknown dataset 'cifar1000'"),
    ("attack.eps=-8/255", "is not a finite radius >= 0"),
    ("optim.epochs=0", "'optim.epochs' = 0 must be >= 1"),
    ("objective.beta=-1", "must be >= 0"),
    ("data.train_npz=/nonexistent.npz", "nonexistent.npz"),
])
def test_cli_bad_input_is_one_line_before_training(tmp_path, capsys, override, message):
    from advtrain.cli import main

    path = _yaml(tmp_path, tiny_config(tmp_path))
    run_dir = os.path.join(tmp_path, "run")
    assert main(["train", path, override, "--run-dir", run_dir]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("advtrain train: error: ") and "\n" not in err and message in err, err
    assert not os.path.exists(run_dir)  # nothing created


def test_cli_train_then_resume_finished_run(tmp_path, capsys):
    from advtrain.cli import main

    path = _yaml(tmp_path, tiny_config(tmp_path, optim={"epochs": 1}, data={"test_subset": 0}))
    run_dir = os.path.join(tmp_path, "run")
    assert main(["train", path, "optim.lr=0.01", "--run-dir", run_dir]) == 0
    assert C.load(os.path.join(run_dir, "config.yaml")).optim.lr == 0.01
    assert main(["train", "--resume", run_dir]) == 0  # already complete: nothing to do
    assert main(["train", path, "--resume", run_dir]) == 2  # lr differs from the stored config
    assert "pass --force" in capsys.readouterr().err
    assert main(["train", path, "--resume", run_dir, "--force"]) == 0


def test_test_subset_is_fixed_random_not_first_images():
    from advtrain.train.setup import _test_subset

    x = torch.arange(100, dtype=torch.float32).view(100, 1)
    y = torch.arange(100) // 10  # sorted by class, like some test files
    xs, ys = _test_subset((x, y), 20)
    again = _test_subset((x, y), 20)
    assert torch.equal(xs, again[0]) and len(ys) == 20
    assert len(set(ys.tolist())) > 3  # not just the first class
    assert torch.equal(ys, y[xs.view(-1).long()])
    with pytest.raises(InputError, match="test_subset = 101"):
        _test_subset((x, y), 101)


def test_optimizer_covers_objective_extra_parameters():
    from advtrain.models import create_model
    from advtrain.config import build_objective
    from advtrain.train.setup import make_optimizer

    cfg = C.from_dict({"model": {"arch": "wrn-10-1"}, "objective": {"name": "lbgat"}})
    model = create_model("wrn-10-1", dataset="cifar10")
    obj = build_objective("lbgat", dataset="cifar10", num_classes=10, natural_arch="wrn-10-1")
    opt = make_optimizer(cfg, model, obj)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    expected = {id(p) for p in model.parameters()} | {id(p) for p in obj.extra_parameters()}
    assert in_opt == expected and len(obj.extra_parameters()) > 0


def test_summary_compares_with_the_paper_row_only_when_there_is_one():
    from advtrain.config.paper_rows import PAPER_ROWS
    from advtrain.train.metrics import summary

    rows = [{"test_clean": 0.5, "test_pgd": 0.25}]
    alone = summary(rows, None)
    assert list(alone.columns) == ["this run"] and alone["this run"].tolist() == [50.0, 25.0]
    row = sorted(PAPER_ROWS)[0]
    both = summary(rows, row)
    assert len(both.columns) == 2 and both.iloc[:, 1].tolist() == list(PAPER_ROWS[row][1:])
