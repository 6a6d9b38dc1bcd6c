"""NCCL start-up on CPU: no collective of fit() or of sharded AutoAttack may get a host tensor.

Each of 2 Gloo ranks runs ``fit()`` (GKL-AT + AWP, prepare_on_main's broadcast, class-prior and
AWP all-reduces, the barrier) and sharded AutoAttack inside :func:`nccl_emulation.checked_collectives`,
which raises on any tensor that would be on the host in a CUDA run. Before the fix,
``broadcast_object`` (size and payload built with ``torch.tensor``/``torch.zeros``) and the
evaluator's ``_common_stage``/``_max_over_ranks`` fail here, as they did under real NCCL
("No backend type associated with device type cpu").
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from advtrain import distributed as D

WORLD = 2


def _worker(r, port, folder, job):
    import logging

    from nccl_emulation import HostTensorInCollective, checked_collectives
    from test_distributed import _no_bn_models

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                      LOCAL_RANK=str(r), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    _no_bn_models(pytest.MonkeyPatch())
    error = ""
    try:
        with checked_collectives():
            JOBS[job](folder)
    except HostTensorInCollective as e:
        error = str(e)
    with open(os.path.join(folder, f"rank{r}.txt"), "w") as f:
        f.write(error)
    if error:  # every rank checks the same collectives, so all stop here; leave without waiting
        os._exit(0)
    D.cleanup()


def _fit(folder):
    """GKL-AT + AWP from epoch 1, 2 steps of global batch 8, per-epoch test evaluation."""
    import advtrain
    from trainer_helpers import tiny_config

    cfg = tiny_config(os.path.join(folder, "data"), objective={"name": "gkl_at"},
                      awp={"enabled": True, "gamma": 0.005, "warmup": 1}, optim={"epochs": 1},
                      data={"batch_size": 8, "test_subset": 8, "augment": "none"})
    advtrain.fit(cfg, run_dir=os.path.join(folder, "run"))


def _sharded(folder):
    """Sharded AutoAttack with its state file (the resume stage agreement is a collective too)."""
    from test_sharded_eval import linear_net, make_data, sharded

    assert D.init_from_env("cpu").world_size == WORLD
    model = linear_net()
    x, y = make_data(model)
    dev = torch.device("cpu")  # the run device; evaluate() moves the data there
    sharded(model, x.to(dev), y.to(dev), state_path=os.path.join(folder, "aa.state"))


JOBS = {"fit": _fit, "sharded": _sharded}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_no_host_tensor_enters_a_collective(tmp_path, job):
    from test_distributed import free_port

    mp.spawn(_worker, args=(free_port(), str(tmp_path), job), nprocs=WORLD, join=True)
    for r in range(WORLD):
        text = (tmp_path / f"rank{r}.txt").read_text()
        assert text == "", f"rank {r}:\n{text}"
    if job == "fit":
        assert (tmp_path / "run" / "last.pt").exists()


def test_tracker_marks_what_a_gpu_run_keeps_on_the_host():
    from nccl_emulation import HostTracker

    dev = torch.device("cpu")  # the run device, standing in for the GPU
    with HostTracker() as tr:
        host = [torch.tensor([1]), torch.zeros(3), torch.zeros(3, device="cpu"),
                torch.ones(2).to(torch.int32), torch.arange(4)[1:] * 2]
        on_dev = torch.rand(3).to(dev)
        device_side = [on_dev, torch.zeros(3, device=dev), torch.zeros_like(on_dev),
                       on_dev + torch.ones(3), torch.tensor([1], device=on_dev.device)]
        moved_back = on_dev.cpu()
        assert [tr.is_host(t) for t in host] == [True] * len(host)
        assert [tr.is_host(t) for t in device_side] == [False] * len(device_side)
        assert tr.is_host(moved_back) and not tr.is_host(on_dev)
