"""Sharded AutoAttack: 2 Gloo ranks give exactly the single-process pyautoattack result."""
from __future__ import annotations

import logging
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from advtrain import distributed as D
from advtrain import evaluation_dist as E
from advtrain.errors import CheckpointError, InputError

EPS, BS, N = 0.005, 4, 24
SUITE = ["apgd-ce", "apgd-t", "fab-t", "square"]
logging.getLogger("auto-attack").setLevel(logging.ERROR)


def small_budget(adv):
    """Tiny budgets so the whole suite runs in about a second on CPU."""
    adv.apgd.n_iter, adv.apgd.n_restarts = 5, 2
    adv.apgd_targeted.n_iter, adv.apgd_targeted.n_target_classes = 5, 3
    adv.fab.n_iter, adv.fab.n_target_classes = 5, 2
    adv.square.n_queries = 20


def linear_net():
    """Large input gradients, so eps=0.005 breaks some examples at each stage and not others."""
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
    """pyautoattack itself, one process, the full set at batch size BS."""
    from pyautoattack.autoattack import AutoAttack

    adv = AutoAttack(model, attacks=SUITE, version="custom", eps=EPS, seed=0, device="cpu")
    adv.verbose = False
    small_budget(adv)
    return adv.run_standard_evaluation(x, y, batch_size=BS)


def sharded(model, x, y, state_path=None):
    return E.run_autoattack_sharded(model, x, y, eps=EPS, version="custom", attacks=SUITE,
                                    batch_size=BS, seed=0, device="cpu", state_path=state_path,
                                    configure=small_budget)


def _worker(r, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                      LOCAL_RANK=str(r), WORLD_SIZE="2")
    torch.set_num_threads(1)
    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    D.init_from_env("cpu")
    model = linear_net()
    x, y = make_data(model)
    res = sharded(model, x, y, state_path=os.path.join(out_dir, "aa.state"))
    torch.save({"x_adv": res.x_adv, "y_adv": res.y_adv, "flags": res.robust_flags,
                "clean_flags": res.clean_flags, "world": torch.tensor(res.world_size),
                "per_attack": torch.tensor([res.per_attack.get(a, -1.0) for a in ["clean"] + SUITE],
                                           dtype=torch.float64)},
               os.path.join(out_dir, f"rank{r}.pt"))
    D.cleanup()


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)  # same kernels as the single-threaded ranks
    model = linear_net()
    x, y = make_data(model)
    x_ref, y_ref = reference(model, x, y)
    assert 0 < int((y_ref == y).sum()) < int((model(x).argmax(1) == y).sum()), "test is trivial"
    return model, x, y, x_ref, y_ref


def test_one_process_equals_pyautoattack(setup):
    model, x, y, x_ref, y_ref = setup
    res = sharded(model, x, y)
    assert torch.equal(res.x_adv, x_ref) and torch.equal(res.y_adv, y_ref)
    assert torch.equal(res.robust_flags, y_ref == y)
    assert res.robust == pytest.approx(float((y_ref == y).float().mean()))
    assert list(res.per_attack) == ["clean"] + SUITE[:len(res.per_attack) - 1]
    assert sum(res.counts.values()) == int(res.clean_flags.sum() - res.robust_flags.sum())
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6


def test_two_ranks_equal_single_process(setup, tmp_path):
    model, x, y, x_ref, y_ref = setup
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    single = sharded(model, x, y)
    for r in range(2):
        out = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        assert int(out["world"]) == 2
        assert torch.equal(out["x_adv"], x_ref) and torch.equal(out["y_adv"], y_ref)
        assert torch.equal(out["flags"], single.robust_flags)
        per = [single.per_attack.get(a, -1.0) for a in ["clean"] + SUITE]
        assert out["per_attack"].tolist() == per
        assert (tmp_path / f"aa.state.rank{r}").is_file()


def test_resume_skips_finished_attacks(setup, tmp_path, monkeypatch):
    model, x, y, x_ref, y_ref = setup
    path = tmp_path / "aa.state"
    full = sharded(model, x, y, state_path=path)
    state = torch.load(f"{path}.rank0", weights_only=True)
    assert state["done"] == SUITE[:len(state["done"])] and len(state["done"]) >= 2
    for key in ("done", "flags", "y_adv", "idx", "x", "stage"):  # pretend we crashed after 1 attack
        state[key] = state[key][:1]
    torch.save(state, f"{path}.rank0")
    calls = []
    real = E.perturb
    monkeypatch.setattr(E, "perturb", lambda adv, name, *a: calls.append(name) or real(adv, name, *a))
    resumed = sharded(model, x, y, state_path=path)
    assert SUITE[0] not in calls and calls  # finished attack skipped, later ones run
    assert torch.equal(resumed.x_adv, full.x_adv) and torch.equal(resumed.y_adv, y_ref)
    assert resumed.per_attack == full.per_attack
    calls.clear()
    again = sharded(model, x, y, state_path=path)  # everything finished: no attack runs
    assert calls == [] and torch.equal(again.x_adv, x_ref)


def test_state_of_other_run_is_refused(setup, tmp_path):
    model, x, y, *_ = setup
    path = tmp_path / "aa.state"
    sharded(model, x, y, state_path=path)
    with pytest.raises(CheckpointError, match="different evaluation"):
        E.run_autoattack_sharded(model, x, y, eps=2 * EPS, version="custom", attacks=SUITE,
                                 batch_size=BS, seed=0, state_path=path, configure=small_budget)


def test_seed_is_required(setup):
    model, x, y, *_ = setup
    with pytest.raises(InputError, match="fixed seed"):
        E.run_autoattack_sharded(model, x, y, seed=None)
