"""DDP with a real attack: per-rank GKL-AT gradients average to the one-process gradient.

The trainer test in test_distributed.py runs with eps 0, where GKL's wMSE and soft-CE gradients
vanish. Here the attack is real (eps 8/255, 3 PGD steps on soft CE + wMSE, the "normal" random start)
and the class prior is not uniform. Each of 2 Gloo ranks attacks its half of the global batch and
back-propagates GKL-AT through DDP; one process does the same on the whole batch. What must hold
for the two to match, and is arranged here:

* the random start is seeded per *sample* (sample i gets the i-th row of one noise tensor), not
  per rank — with one seed per rank both ranks would draw the same noise for different samples;
* no BatchNorm (per-rank batch statistics differ from the global batch's: with BN the forward
  itself differs, so no gradient can match) — the model here has none;
* ``gamma = 1``: GKL normalises the wMSE by ``4 sum_i (sum_j u_ij)^2`` over the batch. With
  ``gamma = 1`` every row sum is 1, so each rank divides by ``4 B_r`` and the rank mean is the
  global mean; with ``gamma != 1`` the row sums depend on the class and the mean of per-rank
  ratios is not the global ratio (docs/DISTRIBUTED.md).

float64 throughout: PGD steps by ``sign(grad)``, and in float64 a pixel gradient would have to be
within ~1e-16 of zero for the different summation order of batch 4 and batch 8 to flip a step.
"""
from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp

from advtrain import distributed as D

WORLD, B = 2, 4
EPS, STEP, K = 8 / 255, 2 / 255, 3


def setup():
    """Model, objective (non-uniform prior), global batch and per-sample start noise."""
    from advtrain.config import build_objective
    from test_distributed import make_data, tiny_net

    model = tiny_net().double()
    with torch.no_grad():  # larger logits: the attack then changes the wMSE term visibly
        model[-1].weight.mul_(30)
    obj = build_objective("gkl_at", dataset="cifar100", num_classes=10, alpha=4.0, beta=20.0,
                          gamma=1.0).double()
    obj.set_attack_budget(EPS, STEP, K)
    g = torch.Generator().manual_seed(5)
    obj.prior.update(torch.randn(40, 10, generator=g, dtype=torch.float64) * 3,
                     torch.arange(40) % 10, 4.0)
    obj.prior.end_epoch()
    x, y = make_data(WORLD * B)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    return model, obj, x.double(), y, noise


def attack_and_grad(model, obj, x, y, noise):
    """x_adv from the seeded start, GKL-AT loss through ``model`` (maybe DDP), ``.grad`` filled."""
    obj.attack.initial_point = lambda xb: xb + 0.001 * noise  # this batch's rows of the noise
    x_adv = obj.perturb(D.unwrap(model), x, y)
    model.train()
    loss, terms = obj.loss(model, x, x_adv, y, update_state=False)
    model.zero_grad()
    loss.backward()
    local = torch.autograd.grad(obj.loss(D.unwrap(model), x, x_adv, y, update_state=False)[0],
                                list(D.unwrap(model).parameters()))
    return x_adv, terms, local


def _worker(r, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                      LOCAL_RANK=str(r), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    D.init_from_env("cpu")
    model, obj, x, y, noise = setup()
    ddp = D.wrap_ddp(model, "cpu")
    mine = slice(r * B, (r + 1) * B)
    x_adv, _, local = attack_and_grad(ddp, obj, x[mine], y[mine], noise[mine])
    torch.save({"x_adv": x_adv, "local": list(local),
                "ddp": [p.grad for p in D.unwrap(ddp).parameters()]},
               os.path.join(out, f"rank{r}.pt"))
    D.cleanup()


def test_rank_gradients_average_to_single_process_with_real_attack(tmp_path):
    from test_distributed import free_port

    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    torch.set_num_threads(1)
    model, obj, x, y, noise = setup()
    x_adv, terms, _ = attack_and_grad(model, obj, x, y, noise)
    single = [p.grad for p in model.parameters()]

    # the attack is real: it moved the inputs a good part of eps, and the wMSE is far from 0
    assert (x_adv - (x + 0.001 * noise)).abs().amax() > EPS / 2
    assert float(terms["wmse"]) > 1e-3 and float(terms["soft_ce"]) > 1e-3
    torch.testing.assert_close(torch.cat([rk["x_adv"] for rk in ranks]), x_adv, rtol=0, atol=1e-12)
    for i, g in enumerate(single):
        assert g.abs().amax() > 1e-6
        mean = (ranks[0]["local"][i] + ranks[1]["local"][i]) / 2
        torch.testing.assert_close(mean, g, rtol=1e-9, atol=1e-12)
        for rk in ranks:  # DDP's all-reduce did that averaging
            torch.testing.assert_close(rk["ddp"][i], g, rtol=1e-9, atol=1e-12)
