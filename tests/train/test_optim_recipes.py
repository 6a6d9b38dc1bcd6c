"""Optimiser recipe options (issue 26): parameter groups against timm's rule, AdamW, gradient
clipping, the per-update lr schedules against timm's schedulers stepped as timm's train.py steps
them, revisiting-at's interpolated cosine, and fp16's gradient scaler (its skip-on-overflow path run
on the CPU with ``torch.amp.GradScaler("cpu")``)."""
from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from advtrain import config as C
from advtrain.config.schedules import lr_at_update
from advtrain.errors import InputError, UnknownNameError
from advtrain.train.loop import Trainer, fit
from trainer_helpers import one_thread, tiny_config

LR, WD = 0.05, 5e-3


@pytest.fixture(autouse=True)
def _threads():
    with one_thread():
        yield


def _names(model, optimizer, decayed: bool):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return sorted(by_id[id(p)] for g in optimizer.param_groups if (g["weight_decay"] > 0) == decayed
                  for p in g["params"] if id(p) in by_id)


def _optim(arch, **optim):
    from advtrain.models import create_model
    from advtrain.train.setup import make_optimizer

    cfg = C.from_dict({"data": {"dataset": "imagefolder", "num_classes": 10, "image_size": 32},
                       "model": {"arch": arch}, "objective": {"name": "pgd_at"},
                       "optim": {"weight_decay": 1e-4, **optim}})
    model = create_model(arch, dataset="imagefolder", num_classes=10, image_size=32)
    obj = SimpleNamespace(extra_parameters=lambda: [])
    return model, make_optimizer(cfg, model, obj)


@pytest.mark.parametrize("arch", ["timm:resnet10t", "timm:test_vit"])
def test_timm_rule_matches_timms_param_groups(arch):
    """wd_exclude: timm == timm's ``param_groups_weight_decay`` with the network's no_weight_decay()."""
    from timm.optim.optim_factory import param_groups_weight_decay

    model, opt = _optim(arch, wd_exclude="timm")
    net = model.model  # the timm network inside advtrain's normalising wrapper
    ref = param_groups_weight_decay(net, 1e-4, no_weight_decay_list=getattr(net, "no_weight_decay", set)())
    names = {id(p): "model." + n for n, p in net.named_parameters()}
    want_no = sorted(names[id(p)] for p in ref[0]["params"])
    want_yes = sorted(names[id(p)] for p in ref[1]["params"])
    assert ref[0]["weight_decay"] == 0.0 and want_no and want_yes
    assert _names(model, opt, decayed=False) == want_no
    assert _names(model, opt, decayed=True) == want_yes
    assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups if g["weight_decay"] > 0)


def test_timm_rule_names_biases_norms_and_vit_tokens():
    """Written out: every bias and every normalisation parameter, and ViT's pos_embed / cls_token."""
    model, opt = _optim("timm:resnet10t", wd_exclude="timm")
    no = set(_names(model, opt, decayed=False))
    norms = {f"{m}.{p}" for m, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d)
             for p in ("weight", "bias")}
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    assert norms and no == norms | biases and "model.fc.bias" in no and "model.fc.weight" not in no
    model, opt = _optim("timm:test_vit", wd_exclude="timm")
    no = set(_names(model, opt, decayed=False))
    lns = {f"{m}.{p}" for m, mod in model.named_modules() if isinstance(mod, nn.LayerNorm)
           for p in ("weight", "bias")}
    assert lns and lns <= no and {"model.pos_embed", "model.cls_token"} <= no
    # revisiting-at's non-ConvNeXt rule has no no_weight_decay() list: the tokens are decayed
    model, opt = _optim("timm:test_vit", wd_exclude="1d")
    no1 = set(_names(model, opt, decayed=False))
    assert no1 == no - {"model.pos_embed", "model.cls_token", "model.reg_token"}


def test_bn_bias_names_rule_decays_layernorm_weights():
    """revisiting-at's ConvNeXt rule: names containing 'bn' or '.bias'; LN weights keep decay."""
    model, opt = _optim("timm:convnext_atto", wd_exclude="bn_bias_names")
    no = set(_names(model, opt, decayed=False))
    want = {n for n, _ in model.named_parameters() if "bn" in n or ".bias" in n}
    assert no == want and any(n.endswith("norm.weight") for n in _names(model, opt, decayed=True))


def test_adamw_with_betas_and_eps():
    model, opt = _optim("timm:resnet10t", name="adamw", betas=[0.9, 0.95], eps=1e-7, lr=1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    assert all(g["betas"] == (0.9, 0.95) and g["eps"] == 1e-7 for g in opt.param_groups)


def test_adam_adds_its_l2_weight_decay_to_the_gradient():
    """optim.name adam (GradAlign's CNN runs: torch.optim.Adam(lr, weight_decay)): two updates equal
    Kingma & Ba's Adam on g + wd * p, in float64 (AdamW would decay the weights outside the moments)."""
    from advtrain.models import create_model
    from advtrain.train.setup import make_optimizer

    lr, wd, (b1, b2), eps = 0.01, 0.1, (0.9, 0.99), 1e-8
    cfg = C.from_dict({"model": {"arch": "cnn-1x2"}, "objective": {"name": "ce"},
                       "optim": {"name": "adam", "lr": lr, "weight_decay": wd, "betas": [b1, b2], "eps": eps}})
    model = create_model("cnn-1x2", dataset="cifar10").double()
    opt = make_optimizer(cfg, model, SimpleNamespace(extra_parameters=lambda: []))
    assert type(opt) is torch.optim.Adam
    gen = torch.Generator().manual_seed(0)
    params = list(model.parameters())
    want = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in want]
    v = [torch.zeros_like(p) for p in want]
    for t in (1, 2):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) * 1e-3 for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(grads):
            g = g + wd * want[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            want[i] = want[i] - lr * (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)).sqrt() + eps)
    for p, w in zip(params, want):
        torch.testing.assert_close(p.detach(), w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("optim, match", [
    ({"name": "adagrad"}, "choices: adam, adamw, sgd"), ({"name": "adamw", "nesterov": True}, "sgd only"),
    ({"name": "adam", "nesterov": True}, "sgd only"),
    ({"betas": [0.9]}, "two numbers"), ({"wd_exclude": "all"}, "timm"),
    ({"wd_exclude": "timm", "wd_exclude_bn": True}, "keep one"), ({"clip_grad_norm": 0}, "> 0"),
    ({"min_lr": 1.0, "lr": 0.1}, "exceeds"), ({"name": "adamw", "schedule": "onecycle"}, "momentum"),
    ({"layer_decay": 1.5}, r"\(0, 1\]"), ({"layer_decay": 0.75}, "timm:<name>")])
def test_optimizer_mistakes_are_one_line_errors(optim, match):
    with pytest.raises((InputError, UnknownNameError), match=match):
        C.from_dict({"optim": optim})


# ----------------------------------------------------------------------------- schedules

def _timm_lrs(sched_cls, U, E, on_updates, **kw):
    """The lr of every optimizer update as timm's train.py gets it: the value set at construction
    for the first, then ``step_update(num_updates)`` after each update (per-update clock) or
    ``step(epoch)`` after each epoch (per-epoch clock)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = sched_cls(opt, t_in_epochs=not on_updates, **kw)
    out, num_updates = [], 0
    for epoch in range(E):
        for _ in range(U):
            out.append(opt.param_groups[0]["lr"])
            num_updates += 1
            sched.step_update(num_updates=num_updates)
        sched.step(epoch + 1)
    return out


@pytest.mark.parametrize("on_updates", [True, False])
def test_step_timm_is_timms_step_scheduler(on_updates):
    """ARES: 95 epochs, warm-up 5 from 1e-4, x0.1 every 30 epochs, no warmup_prefix (U = 3)."""
    from timm.scheduler import StepLRScheduler

    U, E = 3, 95
    s = 1 if not on_updates else U
    ref = _timm_lrs(StepLRScheduler, U, E, on_updates, decay_t=30 * s, decay_rate=0.1, warmup_t=5 * s,
                    warmup_lr_init=1e-4, warmup_prefix=False)
    cfg = C.from_dict({"optim": {"schedule": "step_timm", "lr": 0.2, "epochs": E, "warmup_epochs": 5,
                                 "warmup_lr": 1e-4, "decay_epochs": 30, "lr_gamma": 0.1,
                                 "sched_on_updates": on_updates}}).optim
    ours = [lr_at_update(k, U, cfg) for k in range(E * U)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)
    # the facts of the recipe, written out: epoch 30 (0-indexed) is the first at 0.02
    assert ours[30 * U] == pytest.approx(0.02) and ours[30 * U - 1] == pytest.approx(0.2)
    if on_updates:
        assert ours[1] == pytest.approx(1e-4 + (0.2 - 1e-4) / (5 * U))


@pytest.mark.parametrize("on_updates", [True, False])
def test_cosine_timm_is_timms_cosine_scheduler(on_updates):
    from timm.scheduler import CosineLRScheduler

    U, E = 4, 30
    s = 1 if not on_updates else U
    ref = _timm_lrs(CosineLRScheduler, U, E, on_updates, t_initial=E * s, lr_min=1e-5,
                    warmup_t=3 * s, warmup_lr_init=1e-6, warmup_prefix=False)
    cfg = C.from_dict({"optim": {"schedule": "cosine_timm", "lr": 0.2, "epochs": E, "warmup_epochs": 3,
                                 "warmup_lr": 1e-6, "min_lr": 1e-5, "sched_on_updates": on_updates}}).optim
    ours = [lr_at_update(k, U, cfg) for k in range(E * U)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)


def test_cosine_interp_is_revisiting_ats_schedule():
    """revisiting-at main.py: get_cosine_lr at epoch boundaries, np.interp within each epoch."""
    U, E, W, lr, lr_min = 5, 12, 3, 1e-3, 5e-6

    def get_cosine_lr(e):  # written from the source: linear from 1e-4*lr to lr over W, then cosine
        if e <= W:
            return float(np.interp([e], [0, W], [1e-4 * lr, lr])[0])
        return lr_min + .5 * (lr - lr_min) * (1 + math.cos(math.pi * (e - W) / (E - W)))

    ref = []
    for epoch in range(E):
        ref += list(np.interp(np.arange(U), [0, U], [get_cosine_lr(epoch), get_cosine_lr(epoch + 1)]))
    cfg = C.from_dict({"optim": {"name": "adamw", "schedule": "cosine_interp", "lr": lr, "epochs": E,
                                 "warmup_epochs": W, "warmup_lr": 1e-4 * lr, "min_lr": lr_min}}).optim
    np.testing.assert_allclose([lr_at_update(k, U, cfg) for k in range(E * U)], ref, rtol=1e-12, atol=0)


def test_trainer_sets_the_lr_of_every_update(tmp_path, monkeypatch):
    """warmup_epochs: 1 now acts: the lr rises within the first epoch, update by update."""
    from advtrain.train.step import Stepper

    seen = []
    original = Stepper._optimizer_step

    def record(self):
        seen.append(self.parts.optimizer.param_groups[0]["lr"])
        original(self)

    monkeypatch.setattr(Stepper, "_optimizer_step", record)
    raw = tiny_config(tmp_path, data={"test_subset": 0, "batch_size": 4},
                      optim={"epochs": 2, "lr": 0.1, "schedule": "step_timm", "warmup_epochs": 1,
                             "warmup_lr": 0.01, "decay_epochs": 1, "lr_gamma": 0.5})
    fit(raw)
    U = 4  # 16 images in batches of 4
    want = [0.01 + k * (0.1 - 0.01) / U for k in range(U)] + [0.1 * 0.5] * U  # t // U = 1 decay
    assert seen == pytest.approx(want, rel=1e-12)


# ----------------------------------------------------------------------------- clipping, fp16 scaler

def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))


def _trainer(tmp_path, model, **optim):
    from advtrain.train.setup import make_optimizer

    raw = tiny_config(tmp_path, objective={"name": "pgd_at"}, data={"test_subset": 0, "batch_size": 8},
                      optim={"epochs": 1, "lr": LR, "momentum": 0.9, "weight_decay": WD, **optim})
    trainer = Trainer(C.from_dict(raw), str(tmp_path / "run"), None)
    trainer._set_epoch_hparams(1)
    p = trainer.parts
    p.model = model
    p.optimizer = make_optimizer(trainer.cfg, model, p.objective)
    p.objective.perturb = lambda m, x, y: x  # the attack is not what these tests check
    return trainer


def _batch(trainer):
    return next(iter(trainer.parts.loader))


def test_clip_grad_norm_scales_the_gradient_before_the_step(tmp_path):
    model = _model()
    ref = _model().double()
    trainer = _trainer(tmp_path, model, clip_grad_norm=1e-3)
    x, y = _batch(trainer)
    trainer._train_step(x, y, 1)
    loss = nn.functional.cross_entropy(ref(x.double()), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert norm > 1e-2  # so the clip acts (by > 10x)
    coef = 1e-3 / (norm + 1e-6)  # torch's clip_grad_norm_ rule
    with torch.no_grad():
        for p, g in zip(ref.parameters(), grads):
            p.sub_(LR * (coef * g + WD * p))
    for (k, p), r in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.double(), r, rtol=1e-5, atol=1e-7, msg=k)


def test_fp16_scaler_skips_the_update_on_overflow_and_halves_the_scale(tmp_path):
    """torch's GradScaler on the CPU: a scale that makes the float32 gradients overflow (as fp16's
    do on a GPU at 65504) gives inf gradients, the optimizer step is skipped (weights and momentum
    untouched), the scale halves; a finite scale gives the unscaled step."""
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _trainer(tmp_path, model)
    trainer.parts.scaler = torch.amp.GradScaler("cpu", init_scale=3e38)
    loss_fn = trainer.parts.objective.loss

    def large(*args):  # gradients of size >= ~1e-3 * 1e3: times 3e38 they overflow float32
        loss, terms = loss_fn(*args)
        return loss * 1e3, terms

    trainer.parts.objective.loss = large
    x, y = _batch(trainer)
    assert trainer._train_step(x, y, 1) is not None  # the loss itself was finite
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert trainer.parts.optimizer.state_dict()["state"] == {}
    assert trainer.parts.scaler.get_scale() == pytest.approx(1.5e38, rel=1e-6)

    plain, scaled = _model(), _model()
    t1 = _trainer(tmp_path / "a", plain)
    t2 = _trainer(tmp_path / "b", scaled)
    t2.parts.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    t1._train_step(x, y, 1)
    t2._train_step(x, y, 1)
    assert t2.parts.scaler.get_scale() == 1024.0
    moved = max(float((a - b).abs().max()) for a, b in zip(before, plain.parameters()))
    assert moved > 1e-4
    for a, b in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_is_refused_on_cpu(tmp_path, precision):
    raw = tiny_config(tmp_path, precision=precision)
    with pytest.raises(InputError, match=f"precision {precision} needs a CUDA device"):
        fit(raw)


def test_fp16_with_awp_is_refused():
    with pytest.raises(InputError, match="AWP proxy step has no gradient scaler"):
        C.from_dict({"precision": "fp16", "awp": {"enabled": True}})


def test_recipe_features_resume_mid_epoch_bit_identically(tmp_path, monkeypatch):
    """AdamW, timm's rule, clipping, a per-update warm-up + step schedule, pgd_best, and the
    ImageFolder augmentation (RandAugment, erasing, mixup/cutmix): killed after a mid-epoch
    checkpoint and resumed, the run ends with the uninterrupted run's weights and optimizer state."""
    from advtrain.train import checkpoint as ck
    from folder_helpers import folder_config
    from trainer_helpers import states_equal

    def cfg(sub):
        return folder_config(tmp_path / sub, "pgd_at",
                             data={"batch_size": 10, "test_subset": 0, "randaugment": 2, "reprob": 0.5,
                                   "mixup": 0.8, "cutmix": 1.0, "interpolation": "bicubic"},
                             attack={"name": "pgd_best", "steps": 2},
                             optim={"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "wd_exclude": "timm",
                                    "clip_grad_norm": 1.0, "schedule": "step_timm", "warmup_epochs": 1,
                                    "warmup_lr": 1e-5, "decay_epochs": 1, "epochs": 2},
                             run={"checkpoint_every_steps": 1})

    ref = ck.load(os.path.join(fit(cfg("a")), "last.pt"))
    original = Trainer._save

    def crash(self, epoch_file):
        original(self, epoch_file)
        if not epoch_file and self.progress.epoch == 1 and self.progress.batch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg("b"))
    monkeypatch.setattr(Trainer, "_save", original)
    run_b = str(tmp_path / "b" / "runs" / "t")
    out = ck.load(os.path.join(fit(None, run_dir=run_b, resume=True), "last.pt"))
    assert states_equal(ref["model"], out["model"])
    sa, sb = ref["optimizer"]["state"], out["optimizer"]["state"]
    assert set(sa) == set(sb) and all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    assert [g["lr"] for g in ref["optimizer"]["param_groups"]] == [g["lr"] for g in out["optimizer"]["param_groups"]]


def test_gradient_scaler_state_goes_through_the_checkpoint(tmp_path):
    """fp16's scale and growth counter are a checkpointed part (read back tensors-only)."""
    from advtrain.train import checkpoint as ck
    from advtrain.train.parts import Progress, RNGState, load_states, save_states, stateful

    trainer = _trainer(tmp_path, _model())
    p = trainer.parts
    p.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    x, y = _batch(trainer)
    trainer._train_step(x, y, 1)  # one clean step: growth tracker 1
    named = stateful(p, Progress(), RNGState())
    assert "scaler" in named
    path = str(tmp_path / "c.pt")
    ck.save(dict(ck.pack(save_states(named)), arch="x"), path)
    fresh = torch.amp.GradScaler("cpu")
    load_states({"scaler": fresh}, ck.unpack(torch.load(path, weights_only=True), {"scaler": fresh}))
    assert fresh.get_scale() == 1024.0 and fresh._get_growth_tracker() == 1


def test_new_keys_are_recorded_with_their_defaults_in_config_yaml():
    import yaml

    dumped = yaml.safe_load(C.dump(C.from_dict({})))
    assert {k: dumped["optim"][k] for k in ("name", "betas", "eps", "wd_exclude", "clip_grad_norm",
                                            "warmup_lr", "decay_epochs", "min_lr", "sched_on_updates")} == {
        "name": "sgd", "betas": [0.9, 0.999], "eps": 1e-8, "wd_exclude": "none", "clip_grad_norm": None,
        "warmup_lr": 0.0, "decay_epochs": 30, "min_lr": 0.0, "sched_on_updates": True}
    assert dumped["dist_bn"] == "none" and dumped["precision"] == "fp32" and dumped["model"]["new_head"] is False
    assert {k: dumped["data"][k] for k in ("interpolation", "randaugment", "reprob", "mixup", "cutmix")} == {
        "interpolation": "bilinear", "randaugment": 0, "reprob": 0.0, "mixup": 0.0, "cutmix": 0.0}


def test_layer_decay_is_timms_and_scales_the_lr_of_every_group(tmp_path):
    """optim.layer_decay gives each parameter timm's param_groups_layer_decay lr_scale (BEiT rule,
    from the network's group_matcher); the trainer multiplies the schedule's lr by it."""
    from timm.optim.optim_factory import param_groups_layer_decay

    model, opt = _optim("timm:convnext_atto", layer_decay=0.75, wd_exclude="timm")
    ref = param_groups_layer_decay(model.model, 1e-4, layer_decay=0.75)
    want = {id(p): g["lr_scale"] for g in ref for p in g["params"]}
    got = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    assert got == pytest.approx(want) and len(set(want.values())) > 3
    names = {id(p): n for n, p in model.named_parameters()}
    head = [got[i] for i in got if names[i].startswith("model.head")]
    stem = [got[i] for i in got if names[i].startswith("model.stem")]
    assert set(head) == {1.0} and max(stem) < 0.75 ** 3  # the stem is the deepest from the head
    # the trainer sets lr * lr_scale for every group
    cfg = folder_config_with(tmp_path, optim={"layer_decay": 0.5, "lr": 0.04, "epochs": 1})
    trainer = Trainer(cfg, str(tmp_path / "run"), None)
    trainer._set_epoch_hparams(1)
    from advtrain.config.schedules import lr_at

    base = lr_at(1, cfg.optim)  # the cosine schedule's first-epoch lr
    for g in trainer.parts.optimizer.param_groups:
        assert g["lr"] == pytest.approx(base * g["lr_scale"])
    assert trainer._lr() == pytest.approx(base)


def folder_config_with(tmp_path, **sections):
    from folder_helpers import folder_config

    raw = folder_config(tmp_path, "pgd_at", data={"test_subset": 0}, **sections)
    raw["model"]["arch"] = "timm:convnext_atto"
    return C.from_dict(raw)
