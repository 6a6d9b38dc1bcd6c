"""Sharded AutoAttack: 2 Gloo ranks give exactly the single-process pyautoattack result."""
from __future__ import annotations

import logging
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from advtrain import distributed as D
from advtrain.eval import evaluator as EV
from advtrain.eval import sharded as E
from advtrain.errors import CheckpointError, InputError
from advtrain.eval.settings import EvalSettings
from attacks import AutoAttackAdapter

EPS, BS, N = 0.006, 4, 24
SUITE = ["apgd-ce", "apgd-t", "fab-t", "square"]
logging.getLogger("auto-attack").setLevel(logging.ERROR)


BUDGET = {"n_iter": 5, "n_queries": 20}  # tiny, so the suite runs in seconds on CPU
SETTINGS = EvalSettings(eps=EPS, version="custom", attacks=tuple(SUITE), batch_size=BS, seed=0,
                        sanity=False, progress=False, **BUDGET)


def linear_net():
    """Large input gradients, so eps=0.006 breaks some examples at each stage and not others."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(512, 10))
    with torch.no_grad():
        net[3].weight.mul_(30)
    return net.eval()


def make_data(model):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, 3, 16, 16, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 10  # a few clean mistakes
    return x, y


def reference(model, x, y):
    """The single-process adapter (pyautoattack), the full set at batch size BS."""
    from attacks import AutoAttackAdapter

    return AutoAttackAdapter(eps=EPS, version="custom", attacks=SUITE, seed=0, batch_size=BS,
                             **BUDGET).run(model, x, y)


def sharded(model, x, y, state_path=None):
    return E.run_autoattack_sharded(model, x, y, SETTINGS, device="cpu", state_path=state_path)


def _worker(r, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                      LOCAL_RANK=str(r), WORLD_SIZE="2")
    torch.set_num_threads(1)
    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    D.init_from_env("cpu")
    model = linear_net()
    x, y = make_data(model)
    res = sharded(model, x, y, state_path=os.path.join(out_dir, "aa.state"))
    torch.save({"x_adv": res.x_adv, "y_adv": res.y_adv, "flags": res.robust,
                "clean_flags": res.clean, "world": torch.tensor(res.world_size),
                "per_attack": torch.tensor([res.per_attack.get(a, -1.0) for a in ["clean"] + SUITE],
                                           dtype=torch.float64)},
               os.path.join(out_dir, f"rank{r}.pt"))
    D.cleanup()


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)  # same kernels as the single-threaded ranks
    model = linear_net()
    x, y = make_data(model)
    ref = reference(model, x, y)
    acc = list(ref.per_attack.values())
    assert acc[0] > acc[1] > acc[2] > 0, f"test is trivial: {ref.per_attack}"  # re-batching matters
    return model, x, y, ref


def test_one_process_equals_adapter(setup):
    model, x, y, ref = setup
    res = sharded(model, x, y)
    assert torch.equal(res.x_adv, ref.x_adv) and torch.equal(res.y_adv, ref.y_adv)
    assert torch.equal(res.robust, ref.robust) and torch.equal(res.clean, ref.clean)
    assert res.per_attack == ref.per_attack and list(res.per_attack) == ["clean"] + SUITE
    assert res.robust_accuracy == ref.robust_accuracy
    assert sum(res.counts.values()) == int(res.clean.sum() - res.robust.sum())
    assert set(res.seconds) == set(ref.seconds)
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6


def test_two_ranks_equal_single_process(setup, tmp_path):
    model, x, y, ref = setup
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        out = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        assert int(out["world"]) == 2
        assert torch.equal(out["x_adv"], ref.x_adv) and torch.equal(out["y_adv"], ref.y_adv)
        assert torch.equal(out["flags"], ref.robust) and torch.equal(out["clean_flags"], ref.clean)
        per = [ref.per_attack.get(a, -1.0) for a in ["clean"] + SUITE]
        assert out["per_attack"].tolist() == per
        assert (tmp_path / f"aa.state.rank{r}").is_file()


def test_resume_skips_finished_attacks(setup, tmp_path, monkeypatch):
    model, x, y, ref = setup
    path = tmp_path / "aa.state"
    full = sharded(model, x, y, state_path=path)
    state = torch.load(f"{path}.rank0", weights_only=True)
    assert state["done"] == SUITE[:len(state["done"])] and len(state["done"]) >= 2
    for key in ("done", "flags", "y_adv", "idx", "x", "stage"):  # pretend we crashed after 1 attack
        state[key] = state[key][:1]
    torch.save(state, f"{path}.rank0")
    calls = []
    real = AutoAttackAdapter.attack_batch
    monkeypatch.setattr(AutoAttackAdapter, "attack_batch", staticmethod(
        lambda adv, name, *a: calls.append(name) or real(adv, name, *a)))
    resumed = sharded(model, x, y, state_path=path)
    assert SUITE[0] not in calls and calls  # finished attack skipped, later ones run
    assert torch.equal(resumed.x_adv, full.x_adv) and torch.equal(resumed.y_adv, ref.y_adv)
    assert resumed.per_attack == full.per_attack
    calls.clear()
    again = sharded(model, x, y, state_path=path)  # everything finished: no attack runs
    assert calls == [] and torch.equal(again.x_adv, ref.x_adv)


def test_state_of_other_run_is_refused(setup, tmp_path):
    model, x, y, *_ = setup
    path = tmp_path / "aa.state"
    sharded(model, x, y, state_path=path)
    with pytest.raises(CheckpointError, match=r"another evaluation \(different eps\)"):
        E.run_autoattack_sharded(model, x, y, SETTINGS.replace(eps=2 * EPS), state_path=path)
    for knob, value in (("n_iter", 10), ("n_queries", 40), ("n_restarts", 2), ("n_targets", 3),
                        ("batch_size", 2 * BS), ("seed", 1)):  # issue 16.3: every budget knob
        with pytest.raises(CheckpointError, match=rf"different {knob}\)"):
            E.run_autoattack_sharded(model, x, y, SETTINGS.replace(**{knob: value}),
                                     state_path=path)


def test_state_of_other_model_is_refused(setup, tmp_path):
    """Issue #10: the state file is bound to the model's weights and to the data."""
    import copy

    model, x, y, *_ = setup
    path = tmp_path / "aa.state"
    sharded(model, x, y, state_path=path)
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(0.25)
    with pytest.raises(CheckpointError, match=r"different model\)"):
        sharded(other, x, y, state_path=path)
    with pytest.raises(CheckpointError, match=r"different data\)"):
        sharded(model, x.flip(0), y.flip(0), state_path=path)


def test_seed_is_required(setup):
    model, x, y, *_ = setup
    with pytest.raises(InputError, match="fixed seed"):
        E.run_autoattack_sharded(model, x, y, SETTINGS.replace(seed=None))


def test_torchrun_eval_cli_writes_the_single_process_card(tmp_path):
    """``torchrun --nproc_per_node 2 -m advtrain eval`` = ``advtrain eval``: same card numbers."""
    import json
    import subprocess
    import sys

    import numpy as np

    from advtrain.models import create_model

    torch.manual_seed(0)
    model = create_model("wrn-10-1", dataset="cifar10").eval()
    images = np.random.default_rng(0).integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        labels = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).argmax(1)
    np.savez(tmp_path / "test.npz", image=images, label=labels.numpy())
    torch.save({"model": model.state_dict(), "arch": "wrn-10-1", "dataset": "cifar10"},
               tmp_path / "tiny.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1", ADVTRAIN_OFFLINE="1")
    common = ["eval", str(tmp_path / "tiny.pt"), "--dataset", "cifar10", "--data-npz",
              str(tmp_path / "test.npz"), "--n-ex", "16", "--version", "custom", "--attacks",
              "apgd-ce,apgd-t", "--n-iter", "3", "--batch-size", "4", "--eps", "8/255",
              "--no-sanity", "--quiet", "--device", "cpu", "--name", "tiny"]
    torchrun = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node",
                "2", "--master_port", str(_free_port()), "-m", "advtrain"]
    cards = {}
    for label, cmd in (("single", [sys.executable, "-m", "advtrain"]), ("ddp", torchrun)):
        out = tmp_path / label
        proc = subprocess.run(cmd + common + ["--out", str(out), "--state-path",
                                              str(tmp_path / f"{label}.state")],
                              env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.count("card: ") == 1  # rank 0 alone writes and prints
        card = out / "cifar10" / "Linf" / "tiny.json"
        cards[label] = (json.loads(card.read_text()),
                        json.loads(card.with_suffix(".advtrain.json").read_text()))
    (c1, s1), (c2, s2) = cards["single"], cards["ddp"]
    assert (c1["clean_acc"], c1["autoattack_acc"]) == (c2["clean_acc"], c2["autoattack_acc"])
    assert s1["per_attack"] == s2["per_attack"] and s1["robust_acc"] == s2["robust_acc"]
    assert 1.0 == s1["per_attack"]["clean"] > s1["per_attack"]["apgd-ce"] > s1["robust_acc"]
    assert (tmp_path / "ddp.state.rank0").is_file() and (tmp_path / "ddp.state.rank1").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Coarse(torch.nn.Module):
    """A fake low-precision path: logits rounded to a coarse grid (like bf16's 8-bit mantissa)."""

    def __init__(self, model, step):
        super().__init__()
        self.model, self.step = model, step

    def forward(self, x):
        logits = self.model(x)
        return logits if self.step is None else torch.round(logits / self.step) * self.step


def guarded(model, x, y, lowp):
    return EV.evaluate_low_precision(model, x, y, SETTINGS.replace(precision="bf16", guard_n=16),
                                     device="cpu", lowp_model=lowp)


@pytest.mark.parametrize("step,gap_expected", [(None, False), (50.0, True)])
def test_low_precision_guard(setup, step, gap_expected):
    """An exact 'low-precision' path passes the guard; coarse logits are caught and flagged."""
    model, x, y, _ = setup
    out = guarded(model, x, y, _Coarse(model, step))
    rep = out["sanity"]["precision"]
    assert rep["guard_n"] == 16 and "x_adv" not in out
    flagged = [f for f in out["flags"] if f["code"] == "precision-gap"]
    assert bool(flagged) == gap_expected == (rep["disagree"] > 0)
    assert rep["gap"] == pytest.approx(abs(rep["robust_lowp"] - rep["robust_fp32"]))


def test_cpu_bf16_autocast_path_runs(setup):
    """Real bf16 autocast (CPU here): logits come back float32 and the guard reports."""
    model, x, y, _ = setup
    lowp = EV.AutocastModel(model)
    assert lowp(x[:2]).dtype == torch.float32
    rep = guarded(model, x, y, lowp)["sanity"]["precision"]
    assert 0 <= rep["disagree"] <= rep["guard_n"] == 16


def test_bf16_refused_on_cpu_without_a_low_precision_path(setup):
    model, x, y, _ = setup
    with pytest.raises(InputError, match="needs a CUDA device"):
        EV.evaluate(model, x, y, SETTINGS.replace(precision="bf16"), device="cpu")
