"""Gradient accumulation (``optim.accum_steps``, :mod:`advtrain.train.step`): one optimizer step over
A micro-batches is the big-batch step, checkpoints fall between groups and resume bit-identically,
a short last group steps, a non-finite micro-batch skips the whole step, and DDP all-reduces once
per step."""
from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from advtrain.train import checkpoint as ck
from advtrain import config as C
from advtrain.train.loop import Trainer, fit
from spec_reference import spec_loss
from trainer_helpers import one_thread, states_equal, tiny_config

#: float64 throughout: a wrong scaling moves the weights by ~lr * |g| >> 1e-6, rounding by < 1e-12
TOL = dict(rtol=1e-8, atol=1e-10)
LR, WD, MOM = 0.05, 5e-3, 0.9
OPTIONS = {"pgd_at": {}, "trades": {"beta": 3.0}}


@pytest.fixture(autouse=True)
def _threads():
    with one_thread():
        yield


def _bn_free(seed=0):
    """Conv-ReLU-pool-linear, float64: no BatchNorm, so a sample's logits ignore its batch."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10)).double()


def _trainer(tmp_path, name, accum, batch, model):
    """A trainer on the tiny npz data whose model is ``model`` (float64, BN-free)."""
    from advtrain.train.setup import make_optimizer

    raw = tiny_config(tmp_path, objective={"name": name, **OPTIONS[name]},
                      data={"test_subset": 0, "batch_size": batch},
                      optim={"epochs": 1, "lr": LR, "momentum": MOM, "weight_decay": WD,
                             "accum_steps": accum},
                      attack={"schedule": "fixed", "steps": 2, "step_size": "2/255", "ramp": False})
    trainer = Trainer(C.from_dict(raw), str(tmp_path / f"run{accum}"), None)
    trainer._set_epoch_hparams(1)
    p = trainer.parts
    p.model, p.objective = model, p.objective.double()
    p.optimizer = make_optimizer(trainer.cfg, model, p.objective)
    return trainer


def _double_batches(loader, n):
    it = iter(loader)
    return [(x.double(), y) for x, y in (next(it) for _ in range(n))]


@pytest.mark.parametrize("name", ["pgd_at", "trades"])
def test_two_micro_batches_make_the_big_batch_step(tmp_path, name):
    big = _bn_free()
    acc = _trainer(tmp_path, name, accum=2, batch=4, model=copy.deepcopy(big))
    one = _trainer(tmp_path, name, accum=1, batch=8, model=copy.deepcopy(big))
    ref = copy.deepcopy(big).train()
    batches = _double_batches(acc.parts.loader, 2)
    made = []
    perturb = acc.parts.objective.perturb
    acc.parts.objective.perturb = lambda m, xx, yy: made.append(perturb(m, xx, yy)) or made[-1]

    assert acc.stepper.step(batches, 1) is not None

    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    x_adv = torch.cat(made)
    assert len(made) == 2 and len(y) == 8
    # the same step from accum 1 on the batch of 8 (its attack replaced by the same x_adv) ...
    one.parts.objective.perturb = lambda m, xx, yy: x_adv
    one._train_step(x, y, 1)
    # ... and written out: the float64 gradient of the SPEC loss on all 8, one SGD step (buf = d)
    loss = spec_loss(name, OPTIONS[name], ref(x_adv), ref(x), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    with torch.no_grad():
        for p, g in zip(ref.parameters(), grads):
            p.sub_(LR * (g + WD * p))
    for (k, p), q, r in zip(acc.parts.model.named_parameters(), one.parts.model.parameters(),
                            ref.parameters()):
        torch.testing.assert_close(p, r, **TOL, msg=k)
        torch.testing.assert_close(q, r, **TOL, msg=k)
    moved = max((p - q).abs().max().item() for p, q in zip(ref.parameters(), big.parameters()))
    assert moved > 1e-4  # the step did something the comparison can see


def _cfg(folder, **kw):
    """16 images in batches of 3: 6 loader batches (the last of 1 image), 3 steps of 2 per epoch."""
    return tiny_config(folder, objective={"name": "gkl_at", "alpha": 1.0, "beta": 1.0},
                       awp={"enabled": True, "warmup": 2}, ema={"enabled": True, "decay": 0.5},
                       data={"augment": "basic", "batch_size": 3},
                       optim={"epochs": 2, "lr": 0.05, "weight_decay": 0.0, "accum_steps": 2},
                       run={"checkpoint_every_steps": 1}, **kw)


def test_mid_epoch_resume_with_accumulation_is_bit_identical(tmp_path, monkeypatch):
    saved_at = []
    original = Trainer._save

    def recording(self, epoch_file):
        saved_at.append((self.progress.epoch, self.progress.batch, epoch_file))
        original(self, epoch_file)

    monkeypatch.setattr(Trainer, "_save", recording)
    ref = ck.load(os.path.join(fit(_cfg(tmp_path / "a")), "last.pt"))
    # step checkpoints only between groups of 2 (batches 2 and 4 of 6), never inside one
    assert [(e, b) for e, b, f in saved_at if not f] == [(0, 2), (0, 4), (1, 2), (1, 4)]
    assert (ref["step"], ref["ema_updates"]) == (6, 6)  # 3 optimizer steps and EMA updates per epoch

    def crash_after_mid_save(self, epoch_file):
        original(self, epoch_file)
        if not epoch_file and self.progress.epoch == 1 and self.progress.batch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", crash_after_mid_save)
    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(tmp_path / "b"))
    run_b = str(tmp_path / "b" / "runs" / "t")
    mid = ck.load(os.path.join(run_b, "last.pt"))
    assert (mid["epoch"], mid["batch"], mid["step"]) == (1, 2, 4)
    monkeypatch.setattr(Trainer, "_save", original)
    out = ck.load(os.path.join(fit(None, run_dir=run_b, resume=True), "last.pt"))
    for key in ("model", "objective", "ema"):
        assert states_equal(ref[key], out[key]), key
    oa, ob = ref["optimizer"]["state"], out["optimizer"]["state"]
    assert all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa)
    assert (ref["epoch"], ref["step"]) == (out["epoch"], out["step"])


def test_short_last_group_still_steps(tmp_path):
    """4 batches with accum 3: a group of 3, then a group of 1 that steps too."""
    raw = tiny_config(tmp_path, data={"test_subset": 0, "batch_size": 4},
                      optim={"epochs": 1, "accum_steps": 3})
    trainer = Trainer(C.from_dict(raw), str(tmp_path / "run"), None)
    n = len(trainer.parts.loader)
    assert n == 4 and trainer.steps_per_epoch == 2
    assert [trainer.stepper.group(pos, n).size for pos in (0, 3)] == [3, 1]
    trainer.train()
    assert trainer.progress.step == 2 and trainer.progress.history[-1]["skipped_batches"] == 0


def test_non_finite_micro_batch_skips_the_whole_step(tmp_path, monkeypatch):
    from advtrain.objectives.trades import TRADES

    real, calls = TRADES.loss, {"n": 0}

    def loss(self, *a, **kw):  # the first micro-batch of the second step is non-finite
        out, terms = real(self, *a, **kw)
        calls["n"] += 1
        return (out * float("nan") if calls["n"] == 3 else out), terms

    monkeypatch.setattr(TRADES, "loss", loss)
    raw = tiny_config(tmp_path, nan_policy="skip", data={"test_subset": 0, "batch_size": 4},
                      optim={"epochs": 1, "accum_steps": 2})
    trainer = Trainer(C.from_dict(raw), str(tmp_path / "run"), None)
    trainer.train()
    pr = trainer.progress
    assert (pr.step, pr.history[-1]["skipped_batches"]) == (1, 2)  # of 2 steps over 4 batches
    assert calls["n"] == 3  # the skipped group's second micro-batch is not computed


def test_ddp_all_reduces_once_per_optimizer_step(tmp_path):
    """Under DDP (one Gloo process) the non-final micro-batch runs in no_sync: one gradient
    all-reduce per step of 2 micro-batches, not 2."""
    import torch.distributed as dist

    from advtrain.train.step import no_sync

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        trainer = _trainer(tmp_path, "pgd_at", accum=2, batch=4, model=_bn_free())
        p = trainer.parts
        ddp = nn.parallel.DistributedDataParallel(p.model, bucket_cap_mb=1000)
        reduces = []

        def hook(state, bucket):
            reduces.append(1)
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        ddp.register_comm_hook(None, hook)
        p.model = ddp
        batches = _double_batches(p.loader, 2)
        assert trainer.stepper.step(batches, 1) is not None
        assert len(reduces) == 1
        wrapped = nn.Module()
        wrapped._orig_mod = ddp  # as torch.compile wraps it
        with no_sync(wrapped):
            assert not ddp.require_backward_grad_sync
        assert ddp.require_backward_grad_sync
    finally:
        dist.destroy_process_group()


def test_awp_perturbs_per_micro_batch_and_restores_every_one(tmp_path):
    """With lr 0 the step moves nothing, so the weights after a step of 3 micro-batches with AWP
    on are the starting weights up to add/sub rounding: each perturbation was removed."""
    raw = tiny_config(tmp_path, awp={"enabled": True, "warmup": 1, "gamma": 0.01},
                      data={"test_subset": 0, "batch_size": 4},
                      optim={"epochs": 1, "accum_steps": 3, "momentum": 0.0, "weight_decay": 0.0})
    trainer = Trainer(C.from_dict(raw), str(tmp_path / "run"), None)
    trainer._set_epoch_hparams(1)
    p = trainer.parts
    for group in p.optimizer.param_groups:
        group["lr"] = 0.0
    calls, perturb = [], p.awp.perturb
    p.awp.perturb = lambda *a: calls.append(perturb(*a)) or calls[-1]
    before = {k: v.clone() for k, v in p.model.named_parameters()}
    it = iter(p.loader)
    assert trainer.stepper.step([next(it) for _ in range(3)], 1) is not None
    assert len(calls) == 3
    for name, w in p.model.named_parameters():
        moved = max(d[name].abs().max().item() for d in calls) if name in calls[0] else 0.0
        assert (w - before[name]).abs().max().item() <= 1e-3 * moved + 1e-7, name
    assert max(d.abs().max().item() for d in calls[0].values()) > 1e-3  # AWP moved the weights
