"""DDP helpers: 2 Gloo ranks on CPU reproduce one process on the same global batch."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from advtrain import distributed as D
from advtrain.errors import InputError

STEPS, LOCAL_B, WORLD = 3, 4, 2
EPS, STEP, K = 8 / 255, 2 / 255, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_net() -> torch.nn.Module:
    """A BN-free CNN: its gradient is a mean over examples, so sharding cannot change it."""
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))


def make_data(n: int):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def pgd_trades(model, x, y):
    """KL-PGD from a deterministic start (the start must not depend on the rank)."""
    model.eval()
    with torch.no_grad():
        p_nat = F.softmax(model(x), 1)
    x_adv = (x + 0.5 * EPS).clamp(0, 1)
    for _ in range(K):
        x_adv.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(model(x_adv), 1), p_nat, reduction="sum")
        g, = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + STEP * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    model.train()
    return x_adv.detach()


def train_steps(model, aux, x_all, y_all, batches, reduce_grads=None):
    """TRADES-like steps; ``aux`` is an extra trained module (stands in for LBGAT's natural model)."""
    params = list(model.parameters()) + list(aux.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    prior = torch.zeros(10, 10)
    for idx in batches:
        x, y = x_all[idx], y_all[idx]
        x_adv = pgd_trades(D.unwrap(model), x, y)
        logits_adv, logits_nat = model(x_adv), model(x)
        loss = F.cross_entropy(logits_nat + aux(x.flatten(1)), y) + 6.0 * F.kl_div(
            F.log_softmax(logits_adv, 1), F.softmax(logits_nat, 1), reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        if reduce_grads is not None:
            reduce_grads(aux.parameters())
        opt.step()
        with torch.no_grad():
            prior.index_add_(0, y, F.softmax(logits_nat, 1))
    return prior


def _worker(r, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                      LOCAL_RANK=str(r), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    info = D.init_from_env("cpu")
    assert (info.rank, info.world_size, info.backend) == (r, WORLD, "gloo")
    x_all, y_all = make_data(STEPS * LOCAL_B * WORLD)
    sampler = torch.utils.data.DistributedSampler(range(len(y_all)), WORLD, r, shuffle=False)
    mine = torch.tensor(list(sampler))
    batches = [mine[i * LOCAL_B:(i + 1) * LOCAL_B] for i in range(STEPS)]
    model = D.wrap_ddp(tiny_net(), "cpu")
    torch.manual_seed(2)
    aux = torch.nn.Linear(3 * 16 * 16, 10)
    prior = train_steps(model, aux, x_all, y_all, batches, reduce_grads=D.average_grads_)
    D.all_reduce_sum_({"prior": prior})
    run_dir = D.broadcast_object({"run_dir": f"from-rank-{r}", "n": [1, 2]})
    flag = torch.tensor([r == 1])
    D.all_reduce_sum_(flag)
    state = {f"model.{k}": v for k, v in D.unwrap(model).state_dict().items()}
    state.update({f"aux.{k}": v for k, v in aux.state_dict().items()}, prior=prior,
                 flag=flag, is_main=torch.tensor(D.is_main()))
    torch.save(state, os.path.join(out_dir, f"rank{r}.pt"))
    with open(os.path.join(out_dir, f"rank{r}.json"), "w") as f:
        f.write(str(run_dir))
    D.barrier()
    D.cleanup()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return out


def single_process_reference():
    x_all, y_all = make_data(STEPS * LOCAL_B * WORLD)
    g = LOCAL_B * WORLD
    batches = [torch.arange(i * g, (i + 1) * g) for i in range(STEPS)]
    model = tiny_net()
    torch.manual_seed(2)
    aux = torch.nn.Linear(3 * 16 * 16, 10)
    prior = train_steps(model, aux, x_all, y_all, batches)
    return model, aux, prior


def test_two_ranks_match_one_process(ddp_run):
    model, aux, prior = single_process_reference()
    ranks = [torch.load(ddp_run / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    start = tiny_net().state_dict()
    for k, v in model.state_dict().items():
        assert not torch.allclose(v, start[k]), f"{k} did not train"
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r][f"model.{k}"], v, rtol=1e-4, atol=1e-5)
    for k, v in aux.state_dict().items():  # grads averaged outside DDP by average_grads_
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r][f"aux.{k}"], v, rtol=1e-4, atol=1e-5)
    for r in range(WORLD):  # class-prior accumulators summed over ranks = global accumulator
        torch.testing.assert_close(ranks[r]["prior"], prior, rtol=1e-4, atol=1e-5)
        assert bool(ranks[r]["flag"])  # bool all-reduce is a logical or
    assert [bool(ranks[r]["is_main"]) for r in range(WORLD)] == [True, False]


def test_broadcast_object_is_rank0_value(ddp_run):
    for r in range(WORLD):
        assert (ddp_run / f"rank{r}.json").read_text() == str({"run_dir": "from-rank-0", "n": [1, 2]})


def test_single_process_helpers_are_noops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = D.init_from_env("cpu")
    assert (info.rank, info.world_size, info.backend) == (0, 1, None)
    assert D.is_main() and D.rank() == 0 and D.world_size() == 1
    t = torch.ones(3)
    assert D.all_reduce_sum_(t) is t and torch.equal(t, torch.ones(3))
    model = torch.nn.Linear(2, 2)
    assert D.wrap_ddp(model, "cpu") is model and D.unwrap(model) is model
    assert D.broadcast_object({"a": 1}) == {"a": 1}
    D.barrier()


def test_env_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(InputError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"):
        D.init_from_env("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="not an integer"):
        D.init_from_env("cpu")


def test_cuda_device_maps_to_local_rank():
    assert D.local_device("cuda", 3) == torch.device("cuda", 3)
    assert D.local_device("cuda:1", 3) == torch.device("cuda", 1)
    assert D.local_device("cpu", 3) == torch.device("cpu")


@pytest.mark.parametrize("n,world,align", [(10, 2, 1), (10, 3, 4), (7, 4, 2), (3, 4, 1), (200, 3, 32)])
def test_shard_range_partitions_and_aligns(n, world, align):
    shards = [D.shard_range(n, world, r, align) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    for s in shards[:-1]:
        assert s.stop % align == 0 or s.stop == n
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) < 2 * align  # whole blocks balanced; the last may be partial


# ---------------------------------------------------------------- the real trainer under DDP

def _no_bn_models(monkeypatch_target):
    """create_model with BatchNorm replaced by Identity (per-rank BN statistics cannot match)."""
    import advtrain.models as models

    real = models.create_model

    def create(*args, **kwargs):
        model = real(*args, **kwargs)
        for name, mod in list(model.named_modules()):
            for child_name, child in list(mod.named_children()):
                if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                    setattr(mod, child_name, torch.nn.Identity())
        return model

    monkeypatch_target.setattr(models, "create_model", create)


OBJECTIVES = ("gkl_at", "lbgat")


def trainer_config(folder, objective):
    """2 epochs x 2 steps, global batch 8 (2 ranks x 4), AWP in epoch 2, PGD with eps 0.

    eps 0: PGD steps by sign(grad), which is discontinuous; batch 4 and batch 8 sum in different
    orders, so a pixel whose input gradient is ~1e-9 may step the other way on one side. With
    eps > 0 the runs agree to ~1e-5 (see docs/DISTRIBUTED.md); with eps 0 every other difference
    (gradient averaging, class prior, AWP direction, LBGAT's natural model) must vanish to ~1e-7.
    """
    from trainer_helpers import tiny_config

    return tiny_config(os.path.join(folder, objective), objective={"name": objective},
                       attack={"schedule": "fixed", "steps": 2, "step_size": 0.0, "eps": 0.0,
                               "ramp": False, "init": "none"},
                       awp={"enabled": True, "gamma": 0.005, "warmup": 2},
                       data={"batch_size": 8, "test_subset": 8, "augment": "none"})


def _fit_worker(r, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                      LOCAL_RANK=str(r), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    _no_bn_models(pytest.MonkeyPatch())
    import advtrain

    for objective in OBJECTIVES:
        advtrain.fit(trainer_config(folder, objective),
                     run_dir=os.path.join(folder, objective, "ddp"))
    cfg, resumed = trainer_config(folder, OBJECTIVES[0]), os.path.join(folder, "resumed")
    advtrain.fit(cfg, run_dir=resumed, stop_after=1)  # interrupted after epoch 1 ...
    advtrain.fit(None, run_dir=resumed, resume=True)  # ... and resumed under DDP
    D.cleanup()


@pytest.fixture(scope="module")
def trainer_runs(tmp_path_factory):
    """Both objectives trained by 2 ranks (one spawn) and by one process."""
    import advtrain

    folder = tmp_path_factory.mktemp("ddp_trainer")
    mp.spawn(_fit_worker, args=(free_port(), str(folder)), nprocs=WORLD, join=True)
    mp_patch = pytest.MonkeyPatch()
    _no_bn_models(mp_patch)
    mp_patch.delenv("WORLD_SIZE", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for objective in OBJECTIVES:
            advtrain.fit(trainer_config(str(folder), objective),
                         run_dir=str(folder / objective / "single"))
    finally:
        torch.set_num_threads(threads)
        mp_patch.undo()
    return folder


def test_trainer_ddp_resume_matches_uninterrupted(trainer_runs):
    from advtrain.io.safeload import load_state_file

    a = load_state_file(str(trainer_runs / OBJECTIVES[0] / "ddp" / "last.pt"))
    b = load_state_file(str(trainer_runs / "resumed" / "last.pt"))
    assert b["epoch"] == 2 and [r["epoch"] for r in b["history"]] == [1, 2]
    for part in ("model", "objective"):
        for k in a[part]:
            torch.testing.assert_close(b[part][k], a[part][k], rtol=0, atol=0)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_trainer_ddp_matches_single_process(trainer_runs, objective):
    from advtrain.io.safeload import load_state_file

    a = load_state_file(str(trainer_runs / objective / "single" / "last.pt"))
    b = load_state_file(str(trainer_runs / objective / "ddp" / "last.pt"))
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 4
    for part in ("model", "objective"):  # objective: GKL class prior / LBGAT natural model
        assert set(a[part]) == set(b[part])
        for k in a[part]:
            torch.testing.assert_close(b[part][k], a[part][k], rtol=1e-5, atol=1e-6)
    first = load_state_file(str(trainer_runs / objective / "ddp" / "epoch_1.pt"))
    for part in ("model", "objective"):  # epoch 2 changed the weights and the method state
        assert any(not torch.equal(first[part][k], b[part][k]) for k in b[part]), part
    assert a["history"][-1]["test_clean"] == b["history"][-1]["test_clean"]
    assert sorted(os.listdir(trainer_runs / objective / "ddp")) == sorted(
        os.listdir(trainer_runs / objective / "single"))  # rank 0 alone wrote the same files


# ----------------------------------------------------------------------------- launch environment
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eval_under(env_vars: dict, tmp_path, timeout: float = 60):
    """``python -m advtrain eval`` in a real process with the given torchrun variables (and none
    inherited); returns (rc, stderr lines, seconds)."""
    import subprocess
    import sys
    import time

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from helpers import make_npz, tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    env = {k: v for k, v in os.environ.items()
           if k not in D.LAUNCH_VARS + ("LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")}
    env.update(env_vars)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "advtrain", "eval", str(ckpt), "--dataset", "cifar10", "--data-npz",
         str(make_npz(tmp_path / "t.npz")), "--n-ex", "8", "--version", "custom", "--attacks",
         "apgd-ce", "--n-iter", "1", "--no-sanity", "--quiet", "--device", "cpu", "--out",
         str(tmp_path / "mi")], env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc.returncode, lines, time.monotonic() - start


@pytest.mark.parametrize("env,needle", [
    ({"WORLD_SIZE": "2", "RANK": "0"}, "LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "MASTER_ADDR, MASTER_PORT not set"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
      "MASTER_PORT": "29500"}, "RANK=2 is not in [0, WORLD_SIZE=2)"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
      "MASTER_PORT": "29500"}, "LOCAL_RANK=1 with RANK=0"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
      "MASTER_PORT": "70000"}, "MASTER_PORT=70000 is not a TCP port"),
    ({"WORLD_SIZE": "1", "RANK": "1"}, "leftover torchrun variables"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be in [1, 65536]"),
])
def test_partial_or_impossible_launch_env_is_one_line_at_once(tmp_path, env, needle, monkeypatch,
                                                            capsys):
    """In this process's real environment; ``train`` and ``eval`` check it first of all."""
    import time

    from advtrain.cli import main

    for key in D.LAUNCH_VARS + ("LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    start = time.monotonic()
    for argv in (["eval", str(tmp_path / "absent.pt"), "--dataset", "cifar10", "--out",
                  str(tmp_path / "mi")],
                 ["train", str(tmp_path / "absent.yaml")]):
        assert main(argv) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], lines  # printed whatever RANK says
    assert time.monotonic() - start < 5 and not (tmp_path / "mi").exists()


@pytest.mark.parametrize("rank", ["0", "1"])
def test_rank_without_partner_gives_up_after_the_rendezvous_timeout(tmp_path, rank):
    """A whole but hand-set environment whose other rank never starts: one line after
    ADVTRAIN_RENDEZVOUS_TIMEOUT seconds (3 here), not a 30-minute wait."""
    env = {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "ADVTRAIN_RENDEZVOUS_TIMEOUT": "3"}
    rc, lines, seconds = _eval_under(env, tmp_path, timeout=90)
    assert rc == 2, lines
    printed = [line for line in lines if "did not meet the other ranks" in line]
    assert len(lines) == 1 and printed and f"rank {rank} of 2" in printed[0], lines
    assert seconds < 60


def test_rendezvous_timeout_is_checked(monkeypatch):
    for bad in ("0", "abc", "nan", "1e9"):
        monkeypatch.setenv(D.RENDEZVOUS_ENV, bad)
        with pytest.raises(InputError, match="must be seconds in"):
            D.rendezvous_timeout()
    monkeypatch.setenv(D.RENDEZVOUS_ENV, "2.5")
    assert D.rendezvous_timeout() == 2.5
