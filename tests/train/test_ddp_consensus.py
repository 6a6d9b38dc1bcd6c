"""Decisions every rank must take together under torchrun: a non-finite loss on one rank, errors.

2 Gloo ranks train the tiny config; only rank 1 sees a NaN loss at its 2nd step. Before the flag was
all-reduced, ``nan_policy: skip`` made rank 1 skip ``backward`` while rank 0 waited in DDP's
gradient all-reduce, and ``stop`` left rank 0 waiting for the 30-minute process-group timeout;
here both ranks must be done within ``DEADLINE_S``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

WORLD, DEADLINE_S = 2, 120


def _worker(r, port, folder, policy):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                      LOCAL_RANK=str(r), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    import advtrain
    from advtrain.objectives.trades import TRADES
    from advtrain.train.loop import NonFiniteError
    from trainer_helpers import tiny_config

    original, calls = TRADES.loss, {"n": 0}

    def loss(self, *args, **kwargs):
        out, terms = original(self, *args, **kwargs)
        calls["n"] += 1
        if r == 1 and calls["n"] == 2:
            out = out * float("nan")
        return out, terms

    TRADES.loss = loss
    cfg = tiny_config(os.path.join(folder, "data"), nan_policy=policy, optim={"epochs": 1},
                      run={"checkpoint_every_steps": 1},
                      data={"batch_size": 8, "test_subset": 0, "augment": "none"})
    try:
        advtrain.fit(cfg, run_dir=os.path.join(folder, "run"))
        outcome = "returned"
    except NonFiniteError as e:
        outcome = f"NonFiniteError: {e}"
    with open(os.path.join(folder, f"rank{r}.txt"), "w") as f:
        f.write(outcome)
    from advtrain import distributed as D

    D.cleanup()


def _spawn_with_deadline(fn, args):
    """``mp.spawn`` that kills the ranks (and fails) when they are not all done within the deadline."""
    ctx = mp.start_processes(fn, args=args, nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    while not ctx.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"ranks still running after {DEADLINE_S} s: one is waiting for the other")


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_nan_on_one_rank_is_decided_by_all(tmp_path, policy):
    from advtrain.train import checkpoint as ck
    from test_distributed import free_port

    _spawn_with_deadline(_worker, (free_port(), str(tmp_path), policy))
    outcome = [(tmp_path / f"rank{r}.txt").read_text() for r in range(WORLD)]
    last = ck.load(str(tmp_path / "run" / "last.pt"))
    if policy == "skip":
        assert outcome == ["returned", "returned"]
        # rank 0 saw only finite losses, yet skipped the batch with rank 1
        assert last["history"][-1]["skipped_batches"] == 1 and last["step"] == 1
    else:
        assert all(o.startswith("NonFiniteError: non-finite loss") for o in outcome), outcome
        assert "loss on rank 1" in outcome[0] and "loss term 'loss' on rank 1" in outcome[1]
        assert last["epoch"] == 0 and last["step"] == 1  # the checkpoint of the good step is kept


@pytest.mark.parametrize("rank,printed", [("0", True), ("1", False)])
def test_user_error_printed_by_rank_zero_only(tmp_path, rank, printed):
    env = dict(os.environ, WORLD_SIZE="2", RANK=rank, LOCAL_RANK=rank, MASTER_ADDR="127.0.0.1",
               MASTER_PORT="29500")  # a whole launch environment (never reached: the config fails)
    missing = str(tmp_path / "missing.yaml")
    proc = subprocess.run([sys.executable, "-m", "advtrain", "train", missing], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert ("missing.yaml" in proc.stderr) == printed
    assert "Traceback" not in proc.stderr


def test_torchrun_with_one_process_counts_as_launched(monkeypatch):
    from advtrain import distributed as D

    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert not D.launched()  # WORLD_SIZE=1 alone: a plain single process
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert D.launched()  # torchrun --nproc_per_node 1: DDP/NCCL code paths with one rank
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    assert D.launched()
