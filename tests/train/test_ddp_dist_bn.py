"""``dist_bn: reduce`` (ARES / timm ``distribute_bn``): after each epoch every rank's BatchNorm
running statistics (model and EMA) are the mean over the ranks. 2 Gloo ranks train one epoch of a BN
model; each rank records its buffers just before the reduction (they differ between the ranks: each
normalised its own shard) and after the run: both ranks then hold exactly their mean, and so does
rank 0's checkpoint."""
from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

WORLD = 2


def _running(state):
    return {k: v.detach().clone() for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def _worker(r, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                      LOCAL_RANK=str(r), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    import advtrain
    from advtrain import distributed as D
    from advtrain.train import loop
    from trainer_helpers import tiny_config

    kept, reduce = {}, D.reduce_bn_stats_

    def recording(model, shadow=None):
        kept["before"] = {"model": _running(D.unwrap(model).state_dict()), "ema": _running(shadow)}
        n = reduce(model, shadow)
        kept["after"] = {"model": _running(D.unwrap(model).state_dict()), "ema": _running(shadow)}
        kept["n"] = n
        return n

    loop.D.reduce_bn_stats_ = recording
    cfg = tiny_config(os.path.join(folder, "data"), dist_bn="reduce", optim={"epochs": 1},
                      ema={"enabled": True, "decay": 0.5},
                      data={"batch_size": 8, "test_subset": 0, "augment": "none"})
    advtrain.fit(cfg, run_dir=os.path.join(folder, "run"))
    torch.save(kept, os.path.join(folder, f"rank{r}.pt"))
    D.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dist_bn_reduce_averages_running_statistics_over_ranks(tmp_path):
    from advtrain.train import checkpoint as ck

    mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="spawn")
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    last = ck.load(str(tmp_path / "run" / "last.pt"))
    assert got[0]["n"] == got[1]["n"] > 0
    for part in ("model", "ema"):
        a, b = got[0]["before"][part], got[1]["before"][part]
        assert a and any(not torch.equal(a[k], b[k]) for k in a)  # the ranks' shards differed
        for k in a:
            mean = (a[k].double() + b[k].double()) / 2
            for r in range(WORLD):
                torch.testing.assert_close(got[r]["after"][part][k].double(), mean, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(last[part][k].double(), mean, rtol=1e-6, atol=1e-7)
